#!/usr/bin/env python3
"""Apps serving LwM2M objects (issue 14, Benchmarks), on loopback.

Usage: app_objects_bench.py [--wasmdm BIN] [--reads N] [--seconds S] [--record]

1. Read latency: a minimal LwM2M server in this process (tests/bench/lwm2m_peer.py,
   CoAP written and parsed there) sends N sequential Reads (text/plain) of the
   app resource /3303/0/5700, served by the example `temperature` app, and N of
   the host resource /3/0/13 (Current Time), interleaved; one Read = request sent
   -> response parsed, CON, closed loop.
2. Notifications: the same app publishing every 1 ms; the server observes
   /3303/0/5700 (no attributes: every change may be notified) and counts the
   notifications it gets per second over S seconds, with the device's CPU.

Prints a table; with --record replaces the issue-14 section of BENCHMARKS.md.
Wall-clock figures on this machine; nothing here asserts on time.
"""

import argparse
import asyncio
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in tests/bench
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lwm2m_bench import Bench, cpu_seconds, summary  # noqa: E402
from lwm2m_peer import ACCEPT, GET, OBSERVE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SECTION_BEGIN = "<!-- appobjects:begin -->"
SECTION_END = "<!-- appobjects:end -->"


def pack_temperature(wasmdm, work, interval_ms, cpu=None):
    """The temperature example packed with `interval-ms` (and `cpu`) set; path of the .wdm."""
    src = ROOT / "guest-examples/out/pkg/temperature"
    if not src.exists():
        sys.exit(f"missing {src}: run scripts/build-guests.sh")
    d = work / f"pkg-{interval_ms}"
    d.mkdir(parents=True)
    (d / "temperature.wasm").write_bytes((src / "temperature.wasm").read_bytes())
    manifest = (src / "manifest.toml").read_text()
    manifest = manifest.replace('interval-ms = "1000"', f'interval-ms = "{interval_ms}"')
    if cpu:
        manifest = manifest.replace("objects = [3303]", f'objects = [3303]\ncpu = "{cpu}"')
    (d / "manifest.toml").write_text(manifest)
    out = work / f"temperature-{interval_ms}.wdm"
    subprocess.run([wasmdm, "pack", str(d), "-o", str(out)], check=True, capture_output=True)
    return out


async def device_with_app(wasmdm, work, interval_ms, cpu=None):
    """A registered device running the temperature app; waits until /3303 answers."""
    bench = Bench(wasmdm, work, log_pipe=False)
    bench.data_dir.mkdir(parents=True)
    pkg = pack_temperature(wasmdm, work, interval_ms, cpu)
    for args in (["install", str(pkg)], ["activate", "temperature"]):
        subprocess.run([wasmdm, *args, "--data-dir", str(bench.data_dir)], check=True,
                       capture_output=True)
    await bench.start()
    deadline = time.monotonic() + 60
    while True:
        m = await bench.peer.request(GET, "/3303/0/5700", options=[(ACCEPT, b"")])
        if m.code_s == "2.05":
            return bench
        if time.monotonic() > deadline:
            raise RuntimeError(f"/3303/0/5700 never answered: {m.code_s}")
        await asyncio.sleep(0.1)


async def bench_reads(args, work):
    bench = await device_with_app(args.wasmdm, work / "reads", 1000)
    times = {"/3303/0/5700": [], "/3/0/13": []}
    try:
        # Warm-up, then interleaved so both see the same machine.
        for _ in range(50):
            for path in times:
                await bench.peer.request(GET, path, options=[(ACCEPT, b"")])
        for _ in range(args.reads):
            for path, t in times.items():
                start = time.perf_counter()
                m = await bench.peer.request(GET, path, options=[(ACCEPT, b"")])
                t.append((time.perf_counter() - start) * 1000)
                if m.code_s != "2.05":
                    raise RuntimeError(f"read {path}: {m.code_s}")
    finally:
        await bench.stop()
    return {p: summary(t) for p, t in times.items()}


async def bench_notifications(args, work, cpu=None):
    bench = await device_with_app(args.wasmdm, work / f"notify-{cpu or 'default'}", 1, cpu)
    try:
        first, q = await bench.peer.observe("/3303/0/5700")
        # Let the observation settle, then count.
        await asyncio.sleep(1)
        while not q.empty():
            q.get_nowait()
        cpu0 = cpu_seconds(bench.proc.pid)
        start = time.monotonic()
        count = 0
        values = set()
        while time.monotonic() - start < args.seconds:
            try:
                _, m = await asyncio.wait_for(q.get(), 1)
            except asyncio.TimeoutError:
                continue
            count += 1
            values.add(m.payload)
        elapsed = time.monotonic() - start
        cpu1 = cpu_seconds(bench.proc.pid)
    finally:
        await bench.stop()
    return {
        "cpu": cpu or "50% (default)",
        "notifications": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "distinct_values": len(values),
        "device_cpu_share": (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 is not None else None,
    }


def table(reads, notify, args, when, load0, load1):
    lines = [
        SECTION_BEGIN,
        "## Apps serving LwM2M objects (issue 14)",
        "",
        "Command: `python3 tests/bench/app_objects_bench.py --wasmdm target/release/wasmdm "
        f"--reads {args.reads} --seconds {args.seconds} --record` (release build, loopback; "
        "needs `scripts/build-guests.sh`).",
        "",
        f"Run {when}; load average (1 min) {load0:.2f} at the start, {load1:.2f} at the end, "
        f"on {os.cpu_count()} cores.",
        "",
        "### Read of an app resource vs a host resource",
        "",
        "Sequential CON Reads (text/plain) from a minimal LwM2M server in the bench process "
        "(request sent → response parsed), interleaved. /3303/0/5700 is published by the "
        "`temperature` app and answered by the host from the last published value (a Read "
        "never waits on the guest); /3/0/13 is the host's Current Time.",
        "",
        "| path | reads | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---|---|---|",
    ]
    for path, s in reads.items():
        lines.append(f"| {path} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.2f} |")
    lines += [
        "",
        "### Notifications one app can sustain",
        "",
        "The `temperature` app with `interval-ms = \"1\"` (it publishes 5700, 5601, 5602 "
        "every millisecond); the server observes /3303/0/5700 with no attributes, so every "
        "change may be notified; values the app sets faster than they are handed on are "
        "coalesced (at most one change event per 2 ms). `cpu` is the app's manifest share.",
        "",
        "| app `cpu` | notifications | seconds | per second | distinct payloads | device CPU |",
        "|---|---|---|---|---|---|",
    ]
    for n in notify:
        cpu = n["device_cpu_share"]
        lines.append(
            f"| {n['cpu']} | {n['notifications']} | {n['seconds']:.1f} | {n['per_second']:.0f} | "
            f"{n['distinct_values']} | {'%.0f%%' % (cpu * 100) if cpu is not None else 'n/a'} of one core |")
    lines += [
        "",
        "Both shares give the same rate: an app that waits in `next-request` or "
        "`wait-for-stop` between its steps is not taken for a busy one by the CPU-share check, "
        "though it runs in every epoch tick (before that was fixed, the default share cut this "
        "rate to 175/s). The ceiling is the host's coalescing (at most one change event per "
        "2 ms, so 500/s) and the app's own 1 ms loop.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def record(text):
    path = ROOT / "BENCHMARKS.md"
    old = path.read_text()
    if SECTION_BEGIN in old and SECTION_END in old:
        pre = old.split(SECTION_BEGIN)[0]
        post = old.split(SECTION_END, 1)[1].lstrip("\n")
        new = pre + text + ("\n" + post if post else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmdm", default=str(ROOT / "target/release/wasmdm"))
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wasmdm-appobj-") as tmp:
        work = Path(tmp)
        reads = await bench_reads(args, work)
        notify = [await bench_notifications(args, work),
                  await bench_notifications(args, work, "100%")]
    load1 = os.getloadavg()[0]
    text = table(reads, notify, args, when, load0, load1)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    asyncio.run(main())
