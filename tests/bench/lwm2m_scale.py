#!/usr/bin/env python3
"""Scale benchmark of `wasmdm server` (issue 4): N simulated LwM2M devices.

Usage: lwm2m_scale.py [--wasmdm BIN] [--devices N] [--window W] [--keepalive S]

Each simulated device is a real CoAP endpoint (its own UDP socket on
127.0.0.1) in this one process. Phases: Register all (at most W in flight),
keep them alive with Registration Updates for S seconds, ask the server's HTTP
API how many it has online, De-register all. Reports registrations per
second, Register round-trip percentiles, Update outcomes and the server's
RSS. Devices answer any server request with 4.04 (they model registration
only; no Object 9, so no campaign runs against them).

Bounded: every loop has a count and a deadline; traffic goes to 127.0.0.1 only.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values):
    if not values:
        return None
    return {"n": len(values), "p50": statistics.median(values), "p99": pct(values, 99),
            "max": max(values)}


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def option(last, number, value):
    """One CoAP option (RFC 7252 §3.1) after option `last`; deltas/lengths < 269."""
    delta = number - last
    out = bytearray()
    def nib(v):
        return (v, b"") if v < 13 else (13, bytes([v - 13]))
    dn, dx = nib(delta)
    ln, lx = nib(len(value))
    out.append((dn << 4) | ln)
    return bytes(out) + dx + lx + value


def request(code, mid, token, path, query=(), payload=b"", content_format=None):
    b = bytearray([0x40 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for seg in path:
        b += option(last, 11, seg.encode())
        last = 11
    if content_format is not None:
        v = content_format.to_bytes(max(1, (content_format.bit_length() + 7) // 8), "big") \
            if content_format else b""
        b += option(last, 12, v)
        last = 12
    for q in query:
        b += option(last, 15, q.encode())
        last = 15
    if payload:
        b += b"\xff" + payload
    return bytes(b)


def parse(data):
    """(type, code, mid, token, location path segments) of a datagram."""
    tkl = data[0] & 0x0F
    mtype = (data[0] >> 4) & 0x03
    code = data[1]
    mid = struct.unpack(">H", data[2:4])[0]
    token = bytes(data[4:4 + tkl])
    i, opt, loc = 4 + tkl, 0, []
    while i < len(data) and data[i] != 0xFF:
        delta, length = data[i] >> 4, data[i] & 0x0F
        i += 1
        if delta == 13:
            delta, i = data[i] + 13, i + 1
        elif delta == 14:
            delta, i = struct.unpack(">H", data[i:i + 2])[0] + 269, i + 2
        if length == 13:
            length, i = data[i] + 13, i + 1
        elif length == 14:
            length, i = struct.unpack(">H", data[i:i + 2])[0] + 269, i + 2
        opt += delta
        if opt == 8:
            loc.append(bytes(data[i:i + length]).decode())
        i += length
    return mtype, code, mid, token, loc


class SimDevice(asyncio.DatagramProtocol):
    """One simulated LwM2M client: Register / Update / De-register with retransmission."""

    def __init__(self, name, server):
        self.name = name
        self.server = server
        self.mid = random.randrange(65536)
        self.waiting = {}  # token -> future
        self.location = None
        self.server_requests = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            mtype, code, mid, token, loc = parse(data)
        except Exception:
            return
        if code == 0 or code >= 0x40:  # a response (piggybacked or separate) or empty ACK
            fut = self.waiting.pop(token, None)
            if fut and not fut.done() and code != 0:
                fut.set_result((code, loc))
            return
        self.server_requests += 1
        if mtype == 0:  # CON request from the server: ACK with 4.04 (RFC 7252 §5.2.1)
            tkl = len(token)
            self.transport.sendto(bytes([0x60 | tkl, 0x84]) + struct.pack(">H", mid) + token,
                                  addr)

    async def exchange(self, code, path, query=(), payload=b"", content_format=None,
                       attempts=4, timeout=2.0):
        """CON request; retransmitted with back-off (RFC 7252 §4.2). Returns (code, loc)."""
        token = os.urandom(4)
        self.mid = (self.mid + 1) & 0xFFFF
        msg = request(code, self.mid, token, path, query, payload, content_format)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[token] = fut
        for attempt in range(attempts):
            self.transport.sendto(msg, self.server)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout * (2 ** attempt))
            except asyncio.TimeoutError:
                continue
        self.waiting.pop(token, None)
        return None

    async def register(self, lifetime):
        r = await self.exchange(
            0x02, ["rd"],
            [f"ep={self.name}", f"lt={lifetime}", "lwm2m=1.1", "b=U"],
            b"</>;rt=\"oma.lwm2m\",</1/0>,</3/0>,</9/0>", content_format=40)
        if r and r[0] == 0x41:  # 2.01 Created
            self.location = r[1]
            return True
        return False

    async def update(self):
        r = await self.exchange(0x02, self.location or ["rd"])
        return bool(r and r[0] == 0x44)  # 2.04 Changed

    async def deregister(self):
        r = await self.exchange(0x04, self.location or ["rd"])
        return bool(r and r[0] == 0x42)  # 2.02 Deleted


def rss_kib(pid):
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def api_devices(http_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/devices", timeout=30) as r:
        devs = json.loads(r.read())
    if isinstance(devs, dict):  # tolerate an envelope
        devs = devs.get("devices") or devs.get("data") or []
    return devs


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasmdm", default=str(ROOT / "target/release/wasmdm"))
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--lifetime", type=int, default=30)
    ap.add_argument("--keepalive", type=float, default=60)
    ap.add_argument("--out", default="bench-lwm2m-scale.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wasmdm-bench-scale-"))
    coap_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    log = open(work / "server.log", "w")
    srv = await asyncio.create_subprocess_exec(
        args.wasmdm, "server", "--coap", f"127.0.0.1:{coap_port}", "--http",
        f"127.0.0.1:{http_port}", "--data-dir", str(work / "data"),
        stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1"))
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpus": os.cpu_count(),
               "binary": args.wasmdm,
               "devices": args.devices, "window": args.window}
    try:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        while True:  # the HTTP API answers once the server is up
            try:
                await loop.run_in_executor(None, api_devices, http_port)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not come up")
                await asyncio.sleep(0.2)
        results["rss_idle_kib"] = rss_kib(srv.pid)
        devices = []
        for i in range(args.devices):
            _, proto = await loop.create_datagram_endpoint(
                lambda i=i: SimDevice(f"sim-{i:05d}", ("127.0.0.1", coap_port)),
                local_addr=("127.0.0.1", 0))
            devices.append(proto)

        # Phase 1: Register, at most `window` in flight.
        sem = asyncio.Semaphore(args.window)
        lat = []

        async def reg(d):
            async with sem:
                t = time.monotonic()
                ok = await d.register(args.lifetime)
                if ok:
                    lat.append((time.monotonic() - t) * 1000)
                return ok

        t0 = time.monotonic()
        oks = await asyncio.gather(*(reg(d) for d in devices))
        took = time.monotonic() - t0
        results["register"] = {
            "ok": sum(oks), "seconds": took, "per_second": sum(oks) / took,
            "latency_ms": summary(lat),
        }
        results["rss_after_register_kib"] = rss_kib(srv.pid)
        print(json.dumps(results["register"]), flush=True)

        # Phase 2: keep alive with Updates at a third of the lifetime.
        period = args.lifetime / 3
        upd_ok = upd_fail = 0
        end = time.monotonic() + args.keepalive
        ulat = []

        async def upd(d):
            async with sem:
                t = time.monotonic()
                ok = await d.update()
                ulat.append((time.monotonic() - t) * 1000)
                return ok

        rounds = 0
        while time.monotonic() < end:
            round_start = time.monotonic()
            res = await asyncio.gather(*(upd(d) for d in devices))
            upd_ok += sum(res)
            upd_fail += len(res) - sum(res)
            rounds += 1
            await asyncio.sleep(max(0, min(period - (time.monotonic() - round_start),
                                           end - time.monotonic())))
        devs = await loop.run_in_executor(None, api_devices, http_port)
        online = sum(1 for d in devs if d.get("online") and str(d.get("endpoint", "")).startswith("sim-"))
        results["keepalive"] = {
            "seconds": args.keepalive, "rounds": rounds, "updates_ok": upd_ok,
            "updates_failed": upd_fail, "update_latency_ms": summary(ulat),
            "online_per_api": online,
            "server_requests_seen": sum(d.server_requests for d in devices),
        }
        results["rss_after_keepalive_kib"] = rss_kib(srv.pid)
        print(json.dumps(results["keepalive"]), flush=True)

        # Phase 3: De-register.
        t0 = time.monotonic()

        async def dereg(d):
            async with sem:
                return await d.deregister()

        res = await asyncio.gather(*(dereg(d) for d in devices))
        took = time.monotonic() - t0
        results["deregister"] = {"ok": sum(res), "seconds": took, "per_second": sum(res) / took}
        print(json.dumps(results["deregister"]), flush=True)
        print(json.dumps({k: v for k, v in results.items() if k.startswith("rss")}), flush=True)
    finally:
        if srv.returncode is None:
            srv.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(srv.wait(), 15)
            except asyncio.TimeoutError:
                srv.kill()
                await srv.wait()
        log.close()
        Path(args.out).write_text(json.dumps(results, indent=2))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
