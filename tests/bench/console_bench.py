#!/usr/bin/env python3
"""Web console benchmark (issue 12): the console in a real headless Chromium
with N simulated devices registered at a `wasmdm server`.

Usage: console_bench.py [--wasmdm BIN] [--devices N] [--loads K] [--quota Q]
                        [--delivery push|pull-http] [--out FILE]

The simulated devices are lwm2m_scale.py's (plain CoAP, one UDP socket each,
one Object 9 instance following SwMgmt §5.1/§5.2); the browser is Debian's
`chromium` driven through `chromedriver` (W3C WebDriver over HTTP, urllib).

1. Register N devices (lifetime 600 s: no Updates needed during the run).
2. Sign in through the login form, then load the devices page K times
   (a fresh page load each): the time from navigation start to the table
   first holding all N rows (`performance.now()` when the console's render
   finished, and at the next animation frame), from the page's own
   Performance timing.
3. With the devices page open, upgrade all N devices in one campaign
   (quota Q). While it runs the page records every animation frame's gap,
   the lag of a 50 ms timer, long tasks (PerformanceObserver 'longtask'),
   the server-sent events it received and how long each table render took;
   the devices notify the server on every change (counted device side), so
   events received vs notifications sent shows the batching.

Prints and writes a JSON report. Bounded: deadlines everywhere, loopback only.
"""

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lwm2m_scale as ls  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriver:
    """The few W3C WebDriver commands the benchmark needs."""

    def __init__(self, port, window=(1280, 900)):
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/status")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
        self.profile = tempfile.mkdtemp(prefix="wasmdm-bench-chromium-")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", f"--user-data-dir={self.profile}",
                     f"--window-size={window[0]},{window[1]}"]}}}}
        sid = self.call("POST", "/session", caps)["sessionId"]
        self.session = f"/session/{sid}"

    def call(self, method, path, body=None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None

    def cmd(self, method, path, body=None):
        return self.call(method, self.session + path, body)

    def goto(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css, text):
        self.cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def wait(self, what, script, timeout=60, *args):
        deadline = time.monotonic() + timeout
        while True:
            v = self.js(script, *args)
            if v:
                return v
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting until {what}")
            time.sleep(0.05)

    def quit(self):
        try:
            self.call("DELETE", self.session)
        except Exception:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)


MONITOR = """
const m = window.__bench = { gaps: [], lags: [], longtasks: [], stop: false };
let last = performance.now();
function frame(t) { m.gaps.push(t - last); last = t; if (!m.stop) requestAnimationFrame(frame); }
requestAnimationFrame(frame);
let due = performance.now() + 50;
(function tick() {
  const now = performance.now(); m.lags.push(Math.max(0, now - due)); due = now + 50;
  if (!m.stop) setTimeout(tick, 50);
})();
try {
  new PerformanceObserver((l) => { for (const e of l.getEntries()) m.longtasks.push(e.duration); })
    .observe({ type: "longtask", buffered: false });
} catch (e) { m.longtaskError = String(e); }
m.start = JSON.parse(JSON.stringify(window.consoleStats));
return true;
"""

COLLECT = """
const m = window.__bench; m.stop = true;
const s = window.consoleStats;
return { gaps: m.gaps, lags: m.lags, longtasks: m.longtasks, longtaskError: m.longtaskError || null,
         start: m.start, end: JSON.parse(JSON.stringify(s)) };
"""


def dist(values):
    if not values:
        return None
    v = sorted(values)
    return {"n": len(v), "p50": round(ls.pct(v, 50), 1), "p99": round(ls.pct(v, 99), 1),
            "max": round(v[-1], 1)}


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasmdm", default=str(ROOT / "target/release/wasmdm"))
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--quota", type=int, default=50)
    ap.add_argument("--delivery", default="push", choices=["push", "pull-http"])
    ap.add_argument("--out", default="bench-console.json")
    args = ap.parse_args()
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        sys.exit("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")

    work = Path(tempfile.mkdtemp(prefix="wasmdm-bench-console-"))
    coap_port, http_port = ls.free_port(), ls.free_port(socket.SOCK_STREAM)
    base = f"http://127.0.0.1:{http_port}"
    log = open(work / "server.log", "w")
    ls.API_TOKEN["path"] = work / "data" / "admin-token"
    srv = await asyncio.create_subprocess_exec(
        args.wasmdm, "server", "--coap", f"127.0.0.1:{coap_port}", "--http",
        f"127.0.0.1:{http_port}", "--data-dir", str(work / "data"), "--allow-nosec", "--no-coaps",
        stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1"))
    driver_port = ls.free_port(socket.SOCK_STREAM)
    chromedriver = subprocess.Popen(["chromedriver", f"--port={driver_port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = None
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpus": os.cpu_count(),
               "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "devices": args.devices, "chromium": subprocess.run(
                   ["chromium", "--version"], capture_output=True, text=True).stdout.strip()}
    stats = ls.Stats()
    pool = __import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=16)
    try:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        while True:
            try:
                await loop.run_in_executor(None, ls.api_devices, http_port)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not come up")
                await asyncio.sleep(0.2)
        devices = []
        for i in range(args.devices):
            _, proto = await loop.create_datagram_endpoint(
                lambda i=i: ls.SimDevice(f"sim-{i:05d}", ("127.0.0.1", coap_port), stats, pool),
                local_addr=("127.0.0.1", 0))
            devices.append(proto)
        sem = asyncio.Semaphore(50)

        async def reg(d):
            async with sem:
                return await d.register(600)

        oks = await asyncio.gather(*(reg(d) for d in devices))
        results["registered"] = sum(oks)
        print(json.dumps({"registered": sum(oks)}), flush=True)

        # The browser runs in threads so the simulated devices keep answering.
        def browser_part_1():
            nonlocal wd
            wd = WebDriver(driver_port)
            wd.goto(base + "/login")
            wd.type("#token", ls.api_token())
            wd.click("#sign-in")
            wd.wait("signed in", "return !!document.querySelector('#device-rows');")
            loads = []
            for _ in range(args.loads):
                wd.goto("about:blank")
                wd.goto(base + "/#/devices")
                fr = wd.wait("the table holds every device",
                             "const f = window.consoleStats && window.consoleStats.firstRender; "
                             "return f && f.nextFrame !== undefined ? f : null;")
                nav = wd.js("const n = performance.getEntriesByType('navigation')[0]; "
                            "return {responseEnd: n.responseEnd, domContentLoaded: n.domContentLoadedEventEnd, "
                            "load: n.loadEventEnd};")
                rows = wd.js("return document.querySelectorAll('#device-rows tr').length;")
                loads.append({"first_render_ms": round(fr["at"], 1),
                              "next_frame_ms": round(fr["nextFrame"], 1), "rows_at_first_render": fr["rows"],
                              "rows": rows, **{k: round(v, 1) for k, v in nav.items()}})
            return loads

        loads = await loop.run_in_executor(None, browser_part_1)
        results["page_loads"] = loads
        results["first_render_ms"] = dist([x["next_frame_ms"] for x in loads])
        print(json.dumps({"first_render_ms": results["first_render_ms"], "loads": loads}), flush=True)

        # The campaign, with the devices page open and monitored.
        pkg = (await loop.run_in_executor(
            None, ls.make_packages, args.wasmdm, str(ROOT / "guest-examples/out/pkg/counter"),
            ["2.0.0"], work))["2.0.0"]
        sha = hashlib.sha256(pkg).hexdigest()
        for d in devices:
            d.expected[sha] = True
        await loop.run_in_executor(None, lambda: ls.api(
            http_port, "POST", f"/api/files?name=counter-2.0.0.wdm", raw=pkg))
        await loop.run_in_executor(None, lambda: ls.api(
            http_port, "PUT", "/api/groups/bench", {"endpoints": [d.name for d in devices]}))
        await loop.run_in_executor(None, lambda: wd.js(MONITOR))
        notes_before = sum(stats.notifications[k] for k in ("con", "non"))
        delivery, protocol = ("push", None) if args.delivery == "push" else ("pull", "http")
        spec = {"op": "upgrade", "package": ls.PACKAGE, "group": "bench", "file": sha,
                "delivery": delivery, "quota": args.quota, "timeout_secs": 300}
        if protocol:
            spec["protocol"] = protocol
        t0 = time.monotonic()
        c = await loop.run_in_executor(None, lambda: ls.api(http_port, "POST", "/api/campaigns", spec))
        probes = []
        while True:
            r = await loop.run_in_executor(None, lambda: ls.api(
                http_port, "GET", f"/api/campaigns/{c['id']}?jobs=none"))
            # A WebDriver round trip into the page: how long a script waits to run.
            tp = time.monotonic()
            await loop.run_in_executor(None, lambda: wd.js("return 1;"))
            probes.append((time.monotonic() - tp) * 1000)
            if r["status"] != "running":
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("campaign did not finish in 600 s")
            await asyncio.sleep(0.2)
        took = time.monotonic() - t0
        # Let the last batch arrive, then read the page's figures.
        await asyncio.sleep(1.5)
        m = await loop.run_in_executor(None, lambda: wd.js(COLLECT))
        notes = sum(stats.notifications[k] for k in ("con", "non")) - notes_before
        ev_dev = m["end"]["events"]["devices"] - m["start"]["events"]["devices"]
        ev_camp = m["end"]["events"]["campaigns"] - m["start"]["events"]["campaigns"]
        renders = m["end"]["renders"] - m["start"]["renders"]
        render_ms = m["end"]["renderMsTotal"] - m["start"]["renderMsTotal"]
        results["campaign"] = {
            "delivery": args.delivery, "quota": args.quota, "seconds": round(took, 1),
            "summary": r["summary"],
            "device_notifications": notes,
            "sse_events": {"devices": ev_dev, "campaigns": ev_camp},
            "device_changes_in_events": m["end"]["changed"] - m["start"]["changed"],
            "table_renders": renders,
            "table_render_ms_mean": round(render_ms / renders, 1) if renders else None,
            "table_render_ms_max": round(m["end"]["renderMsMax"], 1),
            "frame_gap_ms": dist(m["gaps"]),
            "timer_lag_ms": dist(m["lags"]),
            "long_tasks": {"count": len(m["longtasks"]), "total_ms": round(sum(m["longtasks"]), 1),
                           "max_ms": round(max(m["longtasks"]), 1) if m["longtasks"] else 0,
                           "error": m["longtaskError"]},
            "webdriver_script_round_trip_ms": dist(probes),
            "rows_on_page_after": await loop.run_in_executor(
                None, lambda: wd.js("return document.querySelectorAll('#device-rows tr').length;")),
        }
        # Every device shows the new version: search the table for it.
        await loop.run_in_executor(None, lambda: wd.type("#device-search", "counter 2.0.0"))
        results["campaign"]["search_counter_2_0_0"] = await loop.run_in_executor(
            None, lambda: wd.js("return document.querySelector('#device-count').textContent;"))
        print(json.dumps(results["campaign"]), flush=True)
    finally:
        if wd is not None:
            wd.quit()
        chromedriver.terminate()
        try:
            chromedriver.wait(10)
        except subprocess.TimeoutExpired:
            chromedriver.kill()
        if srv.returncode is None:
            srv.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(srv.wait(), 15)
            except asyncio.TimeoutError:
                srv.kill()
                await srv.wait()
        log.close()
        pool.shutdown(wait=False, cancel_futures=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
