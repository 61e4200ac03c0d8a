#!/usr/bin/env python3
"""CPU fairness: a 200 ms timer service next to N busy-looping guests.

Installs the `counter` example (a line every `interval-ms` = 200 ms) and N
`spinner` guests (a tight loop that never makes a host call, so only epoch
interruption can take the CPU back) into a fresh data directory, runs
`wasmdm device` (no LwM2M server needed: the apps run whatever the server
does) for a while, and reads the counter's log timestamps back with
`wasmdm logs`: the intervals between its lines show how long a well-behaved
service waits for the CPU behind spinning guests.

Usage: cpu_fairness.py BIN [--spinners N] [--seconds S] [--cpu PCT]
(--cpu sets the spinners' `cpu` grant; 100 = no throttling.)
Prints one JSON line: {"spinners": N, "intervals": n, "mean_ms":, "p50_ms":,
"p99_ms":, "max_ms":}.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
GUESTS = REPO / "guest-examples" / "out"


def pack(bin_, src_dir, out):
    subprocess.run([bin_, "pack", str(src_dir), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--spinners", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cpu", type=int, default=None)
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="wasmdm-fairness-"))
    data = work / "data"
    env = dict(os.environ, WASMDM_DATA_DIR=str(data))
    try:
        pkgs = [work / "counter.wdm"]
        pack(a.bin, GUESTS / "pkg" / "counter", pkgs[0])
        for i in range(a.spinners):
            d = work / f"spin{i}"
            d.mkdir()
            shutil.copy(GUESTS / "spinner.wasm", d / "spinner.wasm")
            (d / "manifest.toml").write_text(
                "manifest-version = 1\n[package]\n"
                f'name = "spin{i}"\nversion = "1.0.0"\n'
                '[[component]]\nid = "spinner"\nfile = "spinner.wasm"\n'
                'world = "wasi:cli/command"\n[component.sandbox]\n'
                'stop-grace-ms = 200\n'
                + (f'cpu = "{a.cpu}%"\n' if a.cpu else ''))
            pkgs.append(work / f"spin{i}.wdm")
            pack(a.bin, d, pkgs[-1])
        for p in pkgs:
            subprocess.run([a.bin, "install", str(p)], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names = ["counter"] + [f"spin{i}" for i in range(a.spinners)]
        for n in names:
            subprocess.run([a.bin, "activate", n], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dev = subprocess.Popen(
            [a.bin, "device", "--server", "coap://127.0.0.1:9", "--bind", "127.0.0.1:0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(a.seconds)
        dev.terminate()
        dev.wait(timeout=30)
        out = subprocess.run([a.bin, "logs", "counter"], env=env, check=True,
                             capture_output=True, text=True).stdout
        times = [int(l.split()[1]) for l in out.splitlines()
                 if " Stdout count=" in l]
        # The last run only (the activate command ran it briefly too).
        runs, cur = [], []
        for t in times:
            if cur and t - cur[-1] > 5000:
                runs.append(cur)
                cur = []
            cur.append(t)
        runs.append(cur)
        last = max(runs, key=len)
        iv = [b - a for a, b in zip(last, last[1:])]
        if not iv:
            print(json.dumps({"error": "no counter lines"}))
            return 1
        iv.sort()
        print(json.dumps({
            "spinners": a.spinners,
            "spinner_cpu": f"{a.cpu}%" if a.cpu else "default",
            "intervals": len(iv),
            "mean_ms": round(statistics.mean(iv), 1),
            "p50_ms": iv[len(iv) // 2],
            "p99_ms": iv[min(len(iv) - 1, int(len(iv) * 0.99))],
            "max_ms": iv[-1],
        }))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
