#!/usr/bin/env python3
"""LwM2M benchmarks of `wasmdm device` (issue 3, Speed) on loopback.

Usage: lwm2m_bench.py [--wasmdm BIN] [--reps N] [--quick] {transfer,transfer-dtls,activate,reads,all}

Peers are independent of wasmdm. The device obeys only its server (in NoSec
mode, only datagrams from the address and port it registered with), so every
request to it leaves from the socket of a minimal LwM2M server in this process
(tests/bench/lwm2m_peer.py: registration, requests, Observe and Block1 pushes,
CoAP written and parsed there, no library in the timed path). The baseline
uses libcoap's `coap-client-notls` / `coap-server-notls`; HTTP pulls are served
by Python's http.server; DTLS transfers go through a `wasmdm server`. The /9
read load is open-loop with Block2 follow-ups from the same server socket.

Prints a human summary and writes JSON results to --out (default
bench-lwm2m.json). Figures are wall-clock on this machine; nothing here
asserts on time.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in tests/bench
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lwm2m_peer import BLOCK2, GET, POST, ServerPeer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MIB = 1 << 20


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values):
    if not values:
        return None
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": pct(values, 99),
        "min": min(values),
        "max": max(values),
    }


def cpu_seconds(pid):
    """User + system CPU time a process has used so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- LwM2M server


class Bench:
    """One device under test, registered with the ServerPeer in this process."""

    def __init__(self, wasmdm, workdir, max_packages=16, log_pipe=True):
        self.wasmdm = wasmdm
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.max_packages = max_packages
        # Without the pipe the device logs straight to a file, so reading its
        # per-block log lines costs this process no CPU during transfers.
        self.log_pipe = log_pipe
        self.peer = None
        self.proc = None
        self.log = []  # (monotonic time, line)
        self.log_waiters = []
        self.notes = {}  # path -> asyncio.Queue of (time, Msg)

    async def start(self):
        self.peer = await ServerPeer.start()
        cfg = self.workdir / "device.toml"
        # Extra device.toml lines (e.g. a small memory-reservation to run
        # the device under valgrind) come from the environment.
        extra = os.environ.get("LWM2M_BENCH_DEVICE_TOML", "")
        cfg.write_text(f"max-packages = {self.max_packages}\nlifetime = 600\n{extra}\n")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        self.proc = await asyncio.create_subprocess_exec(
            self.wasmdm, "device", "--config", str(cfg), "--endpoint", "bench-dev",
            "--server", f"coap://127.0.0.1:{self.peer.port}",
            "--data-dir", str(self.data_dir), "--bind", "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE if self.log_pipe else open(self.workdir / "device.log", "w"),
            stderr=asyncio.subprocess.STDOUT, env=env,
        )
        if self.log_pipe:
            self.reader = asyncio.create_task(self._read_log())
        await self.peer.wait_registered(30)

    async def _read_log(self):
        logf = open(self.workdir / "device.log", "w")
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            now = time.monotonic()
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
            logf.write(f"{now:.6f} {line}\n")
            logf.flush()
            self.log.append((now, line))
            for pattern, fut in list(self.log_waiters):
                if not fut.done() and re.search(pattern, line):
                    fut.set_result((now, line))

    async def wait_log(self, pattern, timeout):
        """(time read here, line) of the next log line matching `pattern` (from now on)."""
        fut = asyncio.get_running_loop().create_future()
        entry = (pattern, fut)
        self.log_waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.log_waiters.remove(entry)

    def uri(self, path):
        return self.peer.uri(path)

    async def read_text(self, path):
        return await self.peer.read_text(path)

    async def execute(self, path, arg=b""):
        return await self.peer.execute(path, arg)

    async def write_text(self, path, text):
        await self.peer.write_text(path, text)

    async def observe(self, path):
        """Starts observing a text resource; notifications go to self.notes[path]."""
        first, q = await self.peer.observe(path)
        self.notes[path] = q
        return first.payload.decode()

    async def wait_value(self, path, want, timeout=60, fail=None):
        """Time of the first notification of `path` equal to `want` (drains older ones)."""
        q = self.notes[path]
        deadline = time.monotonic() + timeout
        while True:
            t, m = await asyncio.wait_for(q.get(), max(0.01, deadline - time.monotonic()))
            v = m.payload.decode()
            if v == want:
                return t
            if fail is not None and v in fail:
                raise RuntimeError(f"{path} became {v}")

    def drain(self, path):
        q = self.notes[path]
        while not q.empty():
            q.get_nowait()

    async def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.peer:
            self.peer.close()


# ---------------------------------------------------------------- packages


def make_package(wasmdm, src, dst_dir, name=None, asset_bytes=0):
    """Copies a package dir, optionally renames it and adds a random asset, packs it."""
    work = Path(dst_dir) / f"src-{name or src.name}-{asset_bytes}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    manifest = (work / "manifest.toml").read_text()
    if name:
        manifest = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', manifest, count=1)
    if asset_bytes:
        (work / "assets").mkdir()
        with open(work / "assets" / "blob.bin", "wb") as f:
            f.write(os.urandom(asset_bytes))
        # The asset is shipped as a [[file]] (README "Manifest reference").
        manifest += '\n[[file]]\npath = "assets/blob.bin"\n'
    (work / "manifest.toml").write_text(manifest)
    out = Path(dst_dir) / f"{name or src.name}-{asset_bytes}.wdm"
    subprocess.run([wasmdm, "pack", str(work), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


# ---------------------------------------------------------------- 1. transfers


def timed(cmd, env=None):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.monotonic() - t0


async def bench_transfer(args, work):
    wasmdm = args.wasmdm
    counter = ROOT / "guest-examples/out/pkg/counter"
    sizes = [("1MiB", MIB), ("10MiB", 10 * MIB)]
    results = {}
    # libcoap baseline: coap-client PUT to / GET from coap-server's dynamic resource.
    lport = free_port()
    lsrv = subprocess.Popen(["coap-server-notls", "-A", "127.0.0.1", "-p", str(lport), "-d", "20",
                             "-v", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hport = free_port()
    serve_dir = work / "serve"
    serve_dir.mkdir(exist_ok=True)
    hsrv = subprocess.Popen([sys.executable, "-m", "http.server", str(hport), "--bind", "127.0.0.1",
                             "--directory", str(serve_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    bench = Bench(wasmdm, work / "dev-transfer", log_pipe=False)
    (work / "dev-transfer").mkdir()
    try:
        await bench.start()
        assert await bench.observe("/9/0/7") == "0"
        await bench.observe("/9/0/9")
        for label, size in sizes:
            pkg = make_package(wasmdm, counter, work, asset_bytes=size - 64 * 1024)
            nbytes = pkg.stat().st_size
            shutil.copy(pkg, serve_dir / pkg.name)
            r = {"bytes": nbytes}
            # Baseline (same file, same block size).
            put = [timed(["coap-client-notls", "-m", "put", "-b", "1024", "-t", "42", "-f", str(pkg),
                          f"coap://127.0.0.1:{lport}/{pkg.name}"]) for _ in range(args.reps)]
            get = [timed(["coap-client-notls", "-m", "get", "-b", "1024", "-o", str(work / "get.out"),
                          f"coap://127.0.0.1:{lport}/{pkg.name}"]) for _ in range(args.reps)]
            if Path(work / "get.out").read_bytes() != pkg.read_bytes():
                raise RuntimeError("libcoap GET returned other bytes")
            curl = [timed(["curl", "-sf", "-o", str(work / "curl.out"),
                           f"http://127.0.0.1:{hport}/{pkg.name}"]) for _ in range(args.reps)]
            r["libcoap_put_s"] = summary(put)
            r["libcoap_get_s"] = summary(get)
            r["curl_get_s"] = summary(curl)
            modes = {
                "push_block1": None,
                "pull_coap": f"coap://127.0.0.1:{lport}/{pkg.name}",
                "pull_http": f"http://127.0.0.1:{hport}/{pkg.name}",
            }
            for mode, uri in modes.items():
                xfer, delivered = [], []
                try:
                    await transfer_rounds(args, bench, pkg, uri, xfer, delivered)
                except Exception as e:  # recorded, not fatal: the other modes still run
                    r[mode + "_error"] = f"{type(e).__name__}: {e}"
                    print(f"{label} {mode}: {r[mode + '_error']}", flush=True)
                    await asyncio.sleep(1)
                r[mode + "_delivered_s"] = summary(delivered)
                if xfer:
                    r[mode + "_transfer_s"] = summary(xfer)
            results[label] = r
            print(json.dumps({label: r}), flush=True)
    finally:
        await bench.stop()
        lsrv.terminate()
        hsrv.terminate()
        lsrv.wait()
        hsrv.wait()
    return results


async def transfer_rounds(args, bench, pkg, uri, xfer, delivered):
    """Delivers `pkg` args.reps times (push when `uri` is None, else pull), back to INITIAL after each."""
    for _ in range(args.reps):
        bench.drain("/9/0/7")
        t0 = time.monotonic()
        if uri is None:
            # From the server's socket (the device obeys nobody else): Block1, 1024-byte
            # blocks, one in flight, as coap-client sends them.
            data = pkg.read_bytes()
            t1 = time.monotonic()
            await bench.peer.push_block1("/9/0/2", data, content_format=42, szx=6, timeout=120)
            xfer.append(time.monotonic() - t1)
        else:
            await bench.write_text("/9/0/3", uri)
        t3 = await bench.wait_value("/9/0/7", "3", timeout=120, fail={"0"})
        delivered.append(t3 - t0)
        # DELIVERED -> Uninstall -> INITIAL (SwMgmt §5.1.1) for the next round.
        await bench.execute("/9/0/6")
        await bench.wait_value("/9/0/7", "0", timeout=30)
        # The device discards the old delivery on a task of its own: let it
        # finish before the next delivery starts.
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------- 1b. transfers over DTLS

DTLS_IDENTITY = "bench-dev"
DTLS_KEY = b"0123456789abcdef"
# What libcoap (OpenSSL 3) must be held to so it negotiates the suite wasmdm
# offers first, TLS_PSK_WITH_AES_128_CCM_8; see tests/bench/force_ciphers.c.
LIBCOAP_PSK_CCM8 = "PSK-AES128-CCM8:@SECLEVEL=0"
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def libcoap_dtls_env(shim):
    return dict(os.environ, LD_PRELOAD=str(shim), WASMDM_FORCE_CIPHERS=LIBCOAP_PSK_CCM8)


def build_cipher_shim(work):
    out = work / "force_ciphers.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(out),
                    str(ROOT / "tests/bench/force_ciphers.c"), "-ldl"], check=True)
    return out


def free_port_pair():
    """P with P and P+1 free (libcoap serves coap on P, coaps on P+1)."""
    for _ in range(100):
        p = free_port()
        if p < 65000:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
            finally:
                s.close()
    raise RuntimeError("no two consecutive free UDP ports")


class Api:
    """The `wasmdm server` HTTP API with its admin token."""

    def __init__(self, port, token_path):
        self.port, self.token_path, self.token = port, Path(token_path), None

    def __call__(self, method, path, body=None, raw=None, timeout=60):
        import urllib.error
        import urllib.request
        if self.token is None:
            self.token = self.token_path.read_text().strip()
        data, headers = None, {"authorization": f"Bearer {self.token}"}
        if body is not None:
            data, headers["content-type"] = json.dumps(body).encode(), "application/json"
        elif raw is not None:
            data, headers["content-type"] = raw, "application/octet-stream"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None


class DeviceLog:
    """The device's log file, read as it grows; times are the lines' own timestamps."""

    def __init__(self, path):
        self.path, self.offset = Path(path), 0

    def mark(self):
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    async def wait(self, pattern, timeout):
        """(timestamp s, match) of the next line from the mark on matching `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            for raw in chunk[:end].splitlines():
                self.offset += len(raw) + 1
                line = ANSI.sub("", raw.decode("utf-8", "replace"))
                m = rx.search(line)
                if m:
                    ts = LOG_TS.match(line)
                    t = (datetime.datetime.fromisoformat(ts.group(1) + "+00:00").timestamp()
                         if ts else time.time())
                    return t, m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no device log line matching {pattern!r} in {timeout} s")
            await asyncio.sleep(0.01)


async def wait_initial(api, path, timeout=30):
    """Polls `path` (an Update State) through the DM API until it reads 0 (INITIAL),
    then lets the device discard the old delivery (its own task) for 0.5 s."""
    deadline = time.monotonic() + timeout
    while True:
        r = api("POST", f"/api/devices/{DTLS_IDENTITY}/dm", {"op": "read", "path": path})
        if (r.get("values") or {}).get(path) == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not back to 0: {r}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


async def run_campaign_dtls(api, spec, timeout=300):
    loop = asyncio.get_running_loop()
    c = await loop.run_in_executor(None, lambda: api("POST", "/api/campaigns", spec))
    deadline = time.monotonic() + timeout
    while True:
        c = await loop.run_in_executor(None, lambda: api("GET", f"/api/campaigns/{c['id']}"))
        if c["status"] != "running":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"campaign {spec['op']} still running after {timeout} s")
        await asyncio.sleep(0.1)
    job = c["jobs"][0]
    if job["status"] != "done":
        raise RuntimeError(f"campaign {spec['op']}: {job['status']} {job.get('details')}")
    return c


class ServerDevice:
    """`wasmdm server` and one `wasmdm device` registered with it, over DTLS-PSK
    (`coaps://`, the device's PSK stored through the API) or plain CoAP
    (`--allow-nosec`, for the comparison)."""

    def __init__(self, wasmdm, work, secure):
        self.wasmdm, self.work, self.secure = wasmdm, Path(work), secure
        self.srv = self.dev = None

    async def start(self):
        self.work.mkdir()
        self.coap_port, self.coaps_port = free_port(), free_port()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
        sock.close()
        log = open(self.work / "server.log", "w")
        self.srv = subprocess.Popen(
            [self.wasmdm, "server", "--coap", f"127.0.0.1:{self.coap_port}",
             "--coaps", f"127.0.0.1:{self.coaps_port}", "--http", f"127.0.0.1:{http_port}",
             "--data-dir", str(self.work / "srv")] + ([] if self.secure else ["--allow-nosec"]),
            stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1"))
        self.api = Api(http_port, self.work / "srv" / "admin-token")
        deadline = time.monotonic() + 20
        while True:
            try:
                self.api("GET", "/api/devices")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("wasmdm server did not come up")
                await asyncio.sleep(0.2)
        if self.secure:
            self.api("PUT", f"/api/security/{DTLS_IDENTITY}",
                     {"mode": "psk", "identity": DTLS_IDENTITY, "key": DTLS_KEY.hex()})
        self.api("PUT", "/api/groups/bench", {"endpoints": [DTLS_IDENTITY]})
        d = self.work / "dev"
        d.mkdir()
        (d / "device.toml").write_text("max-packages = 16\nlifetime = 600\n")
        self.log = DeviceLog(d / "device.log")
        server = (["--server", f"coaps://127.0.0.1:{self.coaps_port}", "--psk-identity", DTLS_IDENTITY]
                  if self.secure else ["--server", f"coap://127.0.0.1:{self.coap_port}"])
        self.dev = subprocess.Popen(
            [self.wasmdm, "device", "--config", str(d / "device.toml"), "--endpoint", DTLS_IDENTITY,
             "--data-dir", str(d / "data"), "--bind", "127.0.0.1:0"] + server,
            stdout=open(d / "device.log", "w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1",
                     WASMDM_PSK_KEY=DTLS_KEY.hex()))
        self.suite = None
        if self.secure:
            _, m = await self.log.wait(r"DTLS session established.*cipher_suite=(0x[0-9A-Fa-f]+)", 30)
            self.suite = m.group(1)
        await self.log.wait(r"registered", 30)
        self.base_uri = (f"coaps://127.0.0.1:{self.coaps_port}" if self.secure
                         else f"coap://127.0.0.1:{self.coap_port}")

    async def pull_uri(self, uri):
        """Device-side seconds from the answered Write of /9/0/3 = `uri` to DELIVERED;
        then Uninstall back to INITIAL."""
        self.log.mark()
        self.api("POST", f"/api/devices/{DTLS_IDENTITY}/dm",
                 {"op": "write", "path": "/9/0/3", "replace": True, "format": 0,
                  "payload": uri.encode().hex()})
        t0, _ = await self.log.wait(r'op="PUT" path=/9/0/3 code=2\.04', 30)
        t3, _ = await self.log.wait(r"update state -> 3 path=/9/0/7\b", 120)
        self.api("POST", f"/api/devices/{DTLS_IDENTITY}/dm", {"op": "execute", "path": "/9/0/6"})
        await self.log.wait(r'op="POST" path=/9/0/6 code=2\.04', 30)
        await wait_initial(self.api, "/9/0/7")
        return t3 - t0

    async def campaign(self, sha, push):
        """(device-side window, campaign POST -> finished) of one `install` campaign
        of file `sha`, pushed or pulled from this server; then an `uninstall` one."""
        spec = {"op": "install", "package": "counter", "group": "bench", "file": sha,
                "quota": 1, "timeout_secs": 300}
        spec.update({"delivery": "push"} if push else
                    {"delivery": "pull", "protocol": "coap", "base_uri": self.base_uri})
        self.log.mark()
        t = time.monotonic()
        task = asyncio.create_task(run_campaign_dtls(self.api, spec))
        # Start: the answered URI Write (pull); for a push, the answer to the
        # campaign's last request before it (the Observe of /9/x/12), as the
        # device logs a Block1 transfer's blocks only at debug level.
        start = (r'op="GET" path=/9/(\d+)/12 code=2\.05' if push
                 else r'op="PUT" path=/9/(\d+)/3 code=2\.04')
        t0, m = await self.log.wait(start, 60)
        t3, _ = await self.log.wait(rf"update state -> 3 path=/9/{m.group(1)}/7\b", 120)
        await task
        took = time.monotonic() - t
        await run_campaign_dtls(self.api, {"op": "uninstall", "package": "counter",
                                           "group": "bench", "quota": 1})
        await asyncio.sleep(0.5)
        return t3 - t0, took

    def stop(self):
        for p in (self.dev, self.srv):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


async def bench_transfer_dtls(args, work):
    """Transfers over DTLS-PSK (TLS_PSK_WITH_AES_128_CCM_8), 1024-byte blocks.

    The device's LwM2M server is `wasmdm server --coaps` (the device takes
    requests from nobody else, and a DTLS client takes none from a peer it
    has no session with), so pushes are `install` campaigns with push
    delivery (the server's Block1 Write of /9/x/2 over the session) and
    server pulls are `install` campaigns with a coaps:// base URI; pulls from
    libcoap are a Package URI written through the DM API. The device-side
    window comes from the device log's own timestamps (see ServerDevice).
    The same campaigns also run against a second server and device over
    plain CoAP, and every row runs once per round, so load hits all alike.
    """
    wasmdm = args.wasmdm
    counter = ROOT / "guest-examples/out/pkg/counter"
    sizes = [("1MiB", MIB), ("10MiB", 10 * MIB)]
    if args.quick:
        sizes = sizes[:1]
    shim = build_cipher_shim(work)
    lenv = libcoap_dtls_env(shim)
    key = DTLS_KEY.decode()
    lport = free_port_pair()
    lsrv = subprocess.Popen(["coap-server-openssl", "-A", "127.0.0.1", "-p", str(lport), "-d", "20",
                             "-k", key, "-v", "0"], env=lenv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lbase = f"coaps://127.0.0.1:{lport + 1}"
    secure = ServerDevice(wasmdm, work / "dtls", True)
    plain = ServerDevice(wasmdm, work / "plain", False)
    results = {}
    try:
        await secure.start()
        await plain.start()
        results["device_cipher_suite"] = secure.suite
        # What libcoap negotiates under the same forcing (checked, untimed).
        out = subprocess.run(["coap-client-openssl", "-m", "get", "-v", "9", "-u", DTLS_IDENTITY,
                              "-k", key, f"{lbase}/"], env=lenv, capture_output=True, text=True)
        m = re.search(r"Using cipher: (\S+)", out.stdout + out.stderr)
        results["libcoap_cipher"] = m.group(1) if m else "?"
        for label, size in sizes:
            pkg = make_package(wasmdm, counter, work, asset_bytes=size - 64 * 1024)
            data = pkg.read_bytes()
            r = {"bytes": len(data)}
            shas = {}
            for sd in (secure, plain):
                f = sd.api("POST", f"/api/files?name=bench-{label}.wdm&description=bench", raw=data)
                shas[sd.secure] = f["sha256"]
            rows = {k: [] for k in (
                "libcoap_put_s", "libcoap_get_s", "libcoap_fixed_s", "pull_coap_delivered_s",
                "push_block1_delivered_s", "push_block1_campaign_s", "pull_server_delivered_s",
                "pull_server_campaign_s", "plain_push_block1_delivered_s",
                "plain_pull_server_delivered_s")}

            async def step(name, fn):
                if r.get(name + "_error"):
                    return
                try:
                    await fn()
                except Exception as e:  # recorded, not fatal: the other rows still run
                    r[name + "_error"] = f"{type(e).__name__}: {e}"
                    print(f"{label} {name}: {r[name + '_error']}", flush=True)

            async def libcoap():
                # libcoap's DTLS client and server, same file, same block size, and
                # what a DTLS GET of the server's index costs them (process start +
                # handshake), to read the transfer part off.
                rows["libcoap_put_s"].append(timed(
                    ["coap-client-openssl", "-m", "put", "-b", "1024", "-t", "42", "-f", str(pkg),
                     "-u", DTLS_IDENTITY, "-k", key, f"{lbase}/{pkg.name}"], env=lenv))
                rows["libcoap_get_s"].append(timed(
                    ["coap-client-openssl", "-m", "get", "-b", "1024", "-o", str(work / "get.out"),
                     "-u", DTLS_IDENTITY, "-k", key, f"{lbase}/{pkg.name}"], env=lenv))
                if Path(work / "get.out").read_bytes() != data:
                    raise RuntimeError("libcoap DTLS GET returned other bytes")
                rows["libcoap_fixed_s"].append(timed(
                    ["coap-client-openssl", "-m", "get", "-u", DTLS_IDENTITY, "-k", key, f"{lbase}/"],
                    env=lenv))

            async def pull_lib():
                rows["pull_coap_delivered_s"].append(await secure.pull_uri(f"{lbase}/{pkg.name}"))

            async def push(sd, prefix):
                w, c = await sd.campaign(shas[sd.secure], True)
                rows[prefix + "push_block1_delivered_s"].append(w)
                if sd.secure:
                    rows["push_block1_campaign_s"].append(c)

            async def pull_server(sd, prefix):
                w, c = await sd.campaign(shas[sd.secure], False)
                rows[prefix + "pull_server_delivered_s"].append(w)
                if sd.secure:
                    rows["pull_server_campaign_s"].append(c)

            for _ in range(args.reps):
                await step("libcoap", libcoap)
                await step("pull_coap", pull_lib)
                await step("push_block1", lambda: push(secure, ""))
                await step("plain_push_block1", lambda: push(plain, "plain_"))
                await step("pull_server", lambda: pull_server(secure, ""))
                await step("plain_pull_server", lambda: pull_server(plain, "plain_"))
            for k, v in rows.items():
                r[k] = summary(v)
            for sd in (secure, plain):
                sd.api("DELETE", f"/api/files/{shas[sd.secure]}")
            results[label] = r
            print(json.dumps({label: r}), flush=True)
    finally:
        secure.stop()
        plain.stop()
        if lsrv.poll() is None:
            lsrv.terminate()
            lsrv.wait()
    return results


# ---------------------------------------------------------------- 2. activate


def log_time(line):
    """Wall-clock time (s since the epoch) of a device log line's own timestamp."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1) + "+00:00").timestamp()


async def raw_request(peer, code, segs):
    """One CON request from the server's socket, no retransmission task: (arrival time, code)."""
    _, fut = peer.send_to_device(code, "/" + "/".join(segs), retransmit=False)
    t, m = await fut
    return t, m.code


async def bench_activate(args, work):
    wasmdm = args.wasmdm
    pkg = make_package(wasmdm, ROOT / "guest-examples/out/pkg/counter", work)
    d = work / "dev-activate"
    d.mkdir()
    subprocess.run([wasmdm, "install", "--data-dir", str(d / "data"), str(pkg)], check=True,
                   stdout=subprocess.DEVNULL)
    bench = Bench(wasmdm, d)
    out = {}
    try:
        await bench.start()
        # The CLI-installed package is adopted as an INSTALLED instance.
        iid = None
        for i in range(4):
            try:
                if await bench.read_text(f"/9/{i}/0") == "counter":
                    iid = i
                    break
            except Exception:
                continue
        if iid is None:
            raise RuntimeError("counter not reported in /9")
        path = f"/9/{iid}/12"
        await bench.observe(path)
        # The Execute goes out as one datagram from the server's socket (the
        # device obeys nobody else), timed from its send to the arrival of the
        # answer; a plain GET the same way is the reference round trip.
        raw_rtt = []
        for _ in range(20):
            t = time.monotonic()
            await asyncio.wait_for(raw_request(bench.peer, GET, ["9", str(iid), "12"]), 5)
            raw_rtt.append((time.monotonic() - t) * 1000)
        resp_t, notif_t, log_t, pipe_t = [], [], [], []
        for rep in range(args.reps * 4):
            if (await bench.read_text(path)) == "1":
                bench.drain(path)
                await bench.execute(f"/9/{iid}/11")
                await bench.wait_value(path, "0", 10)
            await asyncio.sleep(0.3)
            bench.drain(path)
            log_wait = asyncio.create_task(bench.wait_log(r"component=counter/counter source=Stdout", 10))
            await asyncio.sleep(0)
            t0_wall = time.time()
            t0 = time.monotonic()
            t1, code = await asyncio.wait_for(raw_request(bench.peer, POST, ["9", str(iid), "10"]), 10)
            if code != 0x44:  # 2.04
                raise RuntimeError(f"Execute Activate answered {code >> 5}.{code & 31:02d}")
            t2 = await bench.wait_value(path, "1", 10)
            t3, line = await log_wait
            resp_t.append((t1 - t0) * 1000)
            notif_t.append((t2 - t0) * 1000)
            pipe_t.append((t3 - t0) * 1000)
            guest = log_time(line)
            if guest is not None:
                log_t.append((guest - t0_wall) * 1000)
        out = {
            "execute_response_ms": summary(resp_t),
            "activation_state_notify_ms": summary(notif_t),
            "first_guest_line_ms": summary(log_t),
            "first_guest_line_read_ms": summary(pipe_t),
            "raw_get_rtt_ms": summary(raw_rtt),
        }
        print(json.dumps(out), flush=True)
    finally:
        await bench.stop()
    return out


# ---------------------------------------------------------------- 3. reads


def coap_get(mid, token, path, block_num=None):
    """A CON GET: header, token, Uri-Path (11) options, optional Block2 (23, szx 6)."""
    return coap_request(0x01, mid, token, path, block_num)


def coap_request(code, mid, token, path, block_num=None):
    """A CON request with `code` (0x01 GET, 0x02 POST), Uri-Path and optional Block2."""
    b = bytearray([0x40 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for seg in path:
        seg = seg.encode()
        b.append(((11 - last) << 4) | len(seg))
        b += seg
        last = 11
    if block_num is not None:
        val = (block_num << 4) | 6
        vb = val.to_bytes(max(1, (val.bit_length() + 7) // 8), "big")
        b.append(((23 - last) << 4) | len(vb))
        b += vb
    return bytes(b)


class ReadLoad:
    """Open-loop GET /9 generator: one read = the first request and its Block2 follow-ups.

    Sent from the server's socket (the device answers nobody else); the peer
    hands each answer to `on_response` by token, and the follow-up goes out
    from there, so no CoAP library sits in the timed path."""

    def __init__(self, peer):
        self.peer = peer
        self.mid = random.randrange(65536)
        self.pending = {}  # token -> [start, block_count, bytes, future]
        self.errors = 0
        self.probe = None  # when a bytearray, payloads are collected into it

    def send(self, token, block):
        self.mid = (self.mid + 1) & 0xFFFF
        self.peer.send(coap_get(self.mid, token, ["9"], block), self.peer.device)

    def start(self, token, fut):
        self.pending[token] = [time.monotonic(), 0, 0, fut]
        self.peer.handlers[token] = self.on_response
        self.send(token, None)

    def finish(self, token, result):
        entry = self.pending.pop(token)
        self.peer.handlers.pop(token, None)
        if not entry[3].done():
            entry[3].set_result(result)

    def on_response(self, now, m):
        entry = self.pending.get(m.token)
        if entry is None:
            return
        if m.code >> 5 != 2:
            self.errors += 1
            self.finish(m.token, None)
            return
        entry[1] += 1
        entry[2] += len(m.payload)
        if self.probe is not None:
            self.probe += m.payload
        block2 = m.block(BLOCK2)
        if block2 is not None and block2[1]:
            self.send(m.token, block2[0] + 1)
            return
        self.finish(m.token, (now - entry[0], entry[1], entry[2]))

    def clear(self):
        for token in self.pending:
            self.peer.handlers.pop(token, None)
        self.pending.clear()


async def bench_reads(args, work):
    wasmdm = args.wasmdm
    d = work / "dev-reads"
    d.mkdir()
    hello = ROOT / "guest-examples/out/pkg/hello"
    n_pkgs = args.packages
    t0 = time.monotonic()
    for i in range(n_pkgs):
        pkg = make_package(wasmdm, hello, work, name=f"hello-{i:02d}")
        subprocess.run([wasmdm, "install", "--data-dir", str(d / "data"), str(pkg)], check=True,
                       stdout=subprocess.DEVNULL)
    print(f"installed {n_pkgs} packages in {time.monotonic() - t0:.1f} s", flush=True)
    bench = Bench(wasmdm, d, max_packages=n_pkgs + 8, log_pipe=False)
    out = {}
    try:
        await bench.start()
        loop = asyncio.get_running_loop()
        proto = ReadLoad(bench.peer)
        # Check what one read returns: all instances reported.
        proto.probe = bytearray()
        fut = loop.create_future()
        proto.start(os.urandom(4), fut)
        first = await asyncio.wait_for(fut, 5)
        names = len(set(re.findall(rb"hello-\d\d", bytes(proto.probe))))
        proto.probe = None
        print(f"one read of /9: {first[1]} datagrams, {first[2]} bytes; {names} packages named",
              flush=True)
        for rate in args.rates:
            duration = args.seconds
            n = int(rate * duration)
            futs = []
            cpu0 = cpu_seconds(bench.proc.pid)
            gen0 = sum(os.times()[:2])
            start = time.monotonic()
            for k in range(n):
                due = start + k / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                f = loop.create_future()
                proto.start(k.to_bytes(4, "big") + os.urandom(2), f)
                futs.append(f)
            sent_for = time.monotonic() - start
            done = await asyncio.wait(futs, timeout=10)
            lat = [f.result()[0] * 1000 for f in done[0] if f.result() is not None]
            lost = n - len(lat)
            elapsed = time.monotonic() - start
            cpu1 = cpu_seconds(bench.proc.pid)
            gen_cpu = sum(os.times()[:2]) - gen0
            r = {
                "target_rate": rate,
                "requests": n,
                "answered": len(lat),
                "lost_or_error": lost,
                "send_rate": n / sent_for,
                "achieved_rate": len(lat) / elapsed,
                "latency_ms": summary(lat),
                "datagrams_per_read": first[1],
                "bytes_per_read": first[2],
                # CPU the device used per answered read (user + system), and
                # the share of one core the load generator itself took.
                "device_cpu_us_per_read": (cpu1 - cpu0) / len(lat) * 1e6
                if cpu0 is not None and cpu1 is not None and lat else None,
                "generator_cpu_share": gen_cpu / elapsed,
            }
            out[f"{rate}/s"] = r
            print(json.dumps(r), flush=True)
            proto.clear()
            await asyncio.sleep(1)
        out["packages_named_in_read"] = names
    finally:
        await bench.stop()
    return out


# ---------------------------------------------------------------- main


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["transfer", "transfer-dtls", "activate", "reads", "all"])
    ap.add_argument("--wasmdm", default=str(ROOT / "target/release/wasmdm"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--packages", type=int, default=50)
    ap.add_argument("--rates", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--out", default="bench-lwm2m.json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--quick", action="store_true", help="transfer-dtls: 1 MiB only")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wasmdm-bench-lwm2m-"))
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpus": os.cpu_count(),
               "binary": args.wasmdm,
               "peer": "tests/bench/lwm2m_peer.py",
               "reps": args.reps, "invocation": os.environ.get("BENCH_INVOCATION"),
               # The machine may be shared: its load around the run.
               "loadavg_start": os.getloadavg()[0]}
    try:
        if args.what in ("transfer", "all"):
            results["transfer"] = await bench_transfer(args, work)
        if args.what == "transfer-dtls":
            results["transfer_dtls"] = await bench_transfer_dtls(args, work)
        if args.what in ("activate", "all"):
            results["activate"] = await bench_activate(args, work)
        if args.what in ("reads", "all"):
            results["reads"] = await bench_reads(args, work)
    finally:
        results["loadavg_end"] = os.getloadavg()[0]
        Path(args.out).write_text(json.dumps(results, indent=2))
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
