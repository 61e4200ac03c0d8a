#!/usr/bin/env python3
"""Scale benchmark of `wasmdm server` (issue 4): N simulated LwM2M devices.

Usage: lwm2m_scale.py [--wasmdm BIN] [--devices N] [--window W] [--keepalive S]
                      [--campaigns pull-http,push,pull-coap] [--campaign-devices M]
                      [--quota Q] [--package-from DIR]

Each simulated device is a real CoAP endpoint (its own UDP socket on
127.0.0.1) in this one process. Phases:

1. Register all (at most W requests in flight).
2. Keep them alive with Registration Updates (lifetime/3) for S seconds; the
   Updates continue in the background during the campaigns.
3. Group upgrade campaigns: a package is uploaded through the HTTP API, a
   group of M devices is created, an `upgrade` campaign with quota Q is
   started and its report polled until it finishes. One campaign per
   delivery method listed in --campaigns, each upgrading to the next
   version (counter 1.0.0 -> 2.0.0 -> 3.0.0 -> ...).
4. De-register all.

Every simulated device models one Object 9 instance (package "counter"
1.0.0, INSTALLED, active) after OMA SwMgmt §5.1/§5.2: Read and Observe of
/9, /9/0 and /9/0/r in text/plain (0), TLV (11542) or SenML JSON (110)
(text for single resources and SenML JSON otherwise when the server sends no
Accept); notifications on every change of a value (increasing Observe
numbers; CON when Update State reaches DELIVERED/INSTALLED or Activation
State changes, NON otherwise); Write of /9/0/3 (Package URI) fetches the
package itself, over HTTP (urllib in a thread) or CoAP (Block2 GETs from
the device's own socket), so the server's file serving is part of the load;
Block1 Write of /9/0/2 (2.31 Continue, 2.04); Execute /9/0/4 Install,
/9/0/6 Uninstall (argument 1 = ForUpdate), /9/0/10 Activate, /9/0/11
Deactivate (4.05 where the state machine does not allow them). Update State
goes INITIAL 0 -> DOWNLOAD STARTED 1 (result 1) -> DOWNLOADED 2 (result 0)
-> DELIVERED 3 (result 3, sha256 of the bytes checked against the uploaded
file, else INITIAL with result 53) -> INSTALLED 4 (result 2, version from
the package's manifest.toml, INACTIVE) and Activate sets /9/0/12.

Reports registrations per second, Register/Update round trips, and per
campaign: duration, per-device durations p50/p99, done/failed/timed-out
counts, the most devices worked on at once (server report and device side;
asserted <= quota) and the server's RSS before, peak during (sampled every
100 ms) and after.

Bounded: every loop has a count and a deadline; traffic goes to 127.0.0.1 only.
"""

import argparse
import asyncio
import concurrent.futures
import hashlib
import io
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
import tarfile
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# CoAP (RFC 7252) message types, codes and options.
CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4
CREATED, DELETED, CHANGED, CONTENT, CONTINUE = 0x41, 0x42, 0x44, 0x45, 0x5F
BAD_REQUEST, BAD_OPTION, NOT_FOUND, NOT_ALLOWED, NOT_ACCEPTABLE = 0x80, 0x82, 0x84, 0x85, 0x86
INCOMPLETE, UNSUPPORTED_CF = 0x88, 0x8F
O_ETAG, O_OBSERVE, O_LOCATION, O_URI_PATH, O_CF = 4, 6, 8, 11, 12
O_URI_QUERY, O_ACCEPT, O_BLOCK2, O_BLOCK1, O_SIZE2, O_SIZE1 = 15, 17, 23, 27, 28, 60
CF_TEXT, CF_OPAQUE, CF_LINK, CF_SENML_JSON, CF_TLV = 0, 42, 40, 110, 11542

# Object 9 (SwMgmt §6): readable resources and their types.
R9 = {0: "s", 1: "s", 7: "i", 9: "i", 12: "b"}
PACKAGE = "counter"


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


# ---- CoAP codec ----

def uint(v):
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


def _ext(v):
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes([v - 13])
    return 14, struct.pack(">H", v - 269)


def encode(mtype, code, mid, token, options=(), payload=b""):
    """A CoAP datagram; `options` is a list of (number, bytes) in any order."""
    b = bytearray([0x40 | (mtype << 4) | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        dn, dx = _ext(num - last)
        ln, lx = _ext(len(val))
        b.append((dn << 4) | ln)
        b += dx + lx + val
        last = num
    if payload:
        b += b"\xff" + payload
    return bytes(b)


class Msg:
    __slots__ = ("mtype", "code", "mid", "token", "opts", "payload")

    def opt(self, num, default=None):
        for n, v in self.opts:
            if n == num:
                return v
        return default

    def opt_all(self, num):
        return [v for n, v in self.opts if n == num]

    def opt_uint(self, num):
        v = self.opt(num)
        return None if v is None else int.from_bytes(v, "big")

    def path(self):
        return [p.decode() for p in self.opt_all(O_URI_PATH)]


def decode(data):
    """Parses a datagram; raises ValueError when malformed."""
    if len(data) < 4 or data[0] >> 6 != 1:
        raise ValueError("not CoAP 1")
    m = Msg()
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        raise ValueError("bad token")
    m.mtype, m.code = (data[0] >> 4) & 3, data[1]
    m.mid = struct.unpack(">H", data[2:4])[0]
    m.token = bytes(data[4:4 + tkl])
    m.opts, m.payload = [], b""
    i, num = 4 + tkl, 0
    while i < len(data):
        if data[i] == 0xFF:
            m.payload = bytes(data[i + 1:])
            break
        delta, length = data[i] >> 4, data[i] & 0x0F
        i += 1
        vals = []
        for v in (delta, length):
            if v == 13:
                v, i = data[i] + 13, i + 1
            elif v == 14:
                v, i = struct.unpack(">H", data[i:i + 2])[0] + 269, i + 2
            elif v == 15:
                raise ValueError("reserved nibble")
            vals.append(v)
        num += vals[0]
        if i + vals[1] > len(data):
            raise ValueError("option overruns")
        m.opts.append((num, bytes(data[i:i + vals[1]])))
        i += vals[1]
    return m


def block(num, more, szx):
    return uint((num << 4) | (8 if more else 0) | szx)


def parse_block(v):
    x = int.from_bytes(v, "big")
    return x >> 4, bool(x & 8), x & 7


# ---- LwM2M content formats for Object 9 instance 0 ----

def tlv(kind, ident, value):
    """One TLV entry (Core 1.1 §7.4.3): kind 0 instance, 3 resource with value."""
    h = (kind << 6) | (0x20 if ident > 255 else 0)
    n = len(value)
    if n < 8:
        h |= n
        ln = b""
    elif n < 256:
        h, ln = h | 0x08, bytes([n])
    elif n < 65536:
        h, ln = h | 0x10, struct.pack(">H", n)
    else:
        h, ln = h | 0x18, n.to_bytes(3, "big")
    return bytes([h]) + (struct.pack(">H", ident) if ident > 255 else bytes([ident])) + ln + value


def tlv_value(t, v):
    if t == "s":
        return v.encode()
    if t == "b":
        return b"\x01" if v else b"\x00"
    for size in (1, 2, 4, 8):
        if -(1 << (8 * size - 1)) <= v < (1 << (8 * size - 1)):
            return v.to_bytes(size, "big", signed=True)
    raise ValueError("integer out of range")


def text_value(t, v):
    if t == "b":
        return "1" if v else "0"
    return str(v)


def senml_entry(t, v):
    return {"vs": v} if t == "s" else {"vb": bool(v)} if t == "b" else {"v": v}


# ---- simulated device ----

class Stats:
    """Shared counters of all simulated devices (device-side view of a campaign)."""

    def __init__(self):
        self.working = {}  # device -> monotonic time of its Uninstall(1)
        self.intervals = []  # (Uninstall(1), Activate) of finished upgrades
        self.duplicates = 0  # retransmitted server requests (answered from the cache)
        self.notifications = {"con": 0, "non": 0, "con_acked": 0, "con_lost": 0, "rst": 0}
        self.fetches = {"http": 0, "coap": 0, "bytes": 0, "errors": 0}
        self.pushes = {"blocks": 0, "complete": 0}
        self.integrity_failures = 0
        self.refused = 0  # requests answered 4.xx by the state machine

    def start(self, name):
        self.working[name] = time.monotonic()

    def stop(self, name, completed=True):
        t = self.working.pop(name, None)
        if t is not None and completed:
            self.intervals.append((t, time.monotonic()))


_versions = {}


def package_version(data):
    """PkgVersion from a .wdm (tar.gz with manifest.toml); cached by digest."""
    sha = hashlib.sha256(data).hexdigest()
    if sha not in _versions:
        version = "unknown-" + sha[:8]
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                for m in tf.getmembers():
                    if m.name.lstrip("./") == "manifest.toml":
                        f = tf.extractfile(m)
                        if f is not None:
                            version = tomllib.loads(f.read().decode())["package"]["version"]
                        break
        except Exception:
            pass
        _versions[sha] = version
    return _versions[sha]


def http_get(uri):
    with urllib.request.urlopen(uri, timeout=60) as r:
        return r.read()


class SimDevice(asyncio.DatagramProtocol):
    """One simulated LwM2M client: registration plus one Object 9 instance."""

    def __init__(self, name, server, stats, pool):
        self.name = name
        self.server = server
        self.stats = stats
        self.pool = pool
        self.mid = random.randrange(65536)
        self.waiting = {}  # token -> future (our requests to the server)
        self.location = None
        self.server_requests = 0
        self.replies = {}  # MID -> reply bytes (RFC 7252 §4.5 duplicates), bounded
        self.pending_con = {}  # MID of our CON notifications -> (bytes, token)
        # Object 9 instance 0.
        self.sw = {0: PACKAGE, 1: "1.0.0", 7: 4, 9: 2, 12: True}
        self.observers = {}  # token -> (path segments, accept)
        self.obs_seq = 1
        self.block1 = bytearray()
        self.expected = {}  # sha256 -> True: digests the bench uploaded
        self.delivered_sha = None
        self.downloading = False
        self.installing_version = None
        self.recent_non = {}  # MID of our NON notifications -> token (an RST cancels)
        self.log = []  # (time, event) for debugging

    def connection_made(self, transport):
        self.transport = transport

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    # -- datagrams --

    def datagram_received(self, data, addr):
        try:
            m = decode(data)
        except (ValueError, IndexError):
            return
        if (m.mtype == ACK and m.code == 0) or m.mtype == RST:
            entry = self.pending_con.pop(m.mid, None)
            if entry is not None and m.mtype == ACK:
                self.stats.notifications["con_acked"] += 1
            if m.mtype == RST:  # RFC 7641 §3.6: the server forgot the observation
                token = entry[1] if entry is not None else self.recent_non.get(m.mid)
                if token is not None and self.observers.pop(token, None) is not None:
                    self.stats.notifications["rst"] += 1
            return
        if m.code == 0:
            return
        if m.code >= 0x40:  # a response to one of our requests
            if m.mtype == CON:
                self.transport.sendto(encode(ACK, 0, m.mid, b""), addr)
            fut = self.waiting.pop(m.token, None)
            if fut and not fut.done():
                fut.set_result(m)
            return
        # A request from the server.
        if m.mtype == CON and m.mid in self.replies:
            self.stats.duplicates += 1
            self.transport.sendto(self.replies[m.mid], addr)
            return
        self.server_requests += 1
        try:
            code, opts, payload, after = self.handle(m)
        except Exception as e:  # a bug here must not kill the device
            self.log.append((time.monotonic(), f"handler error {e!r}"))
            code, opts, payload, after = 0xA0, [], b"", None  # 5.00
        if m.mtype == CON:
            reply = encode(ACK, code, m.mid, m.token, opts, payload)
            self.replies[m.mid] = reply
            if len(self.replies) > 64:
                self.replies.pop(next(iter(self.replies)))
        else:
            reply = encode(NON, code, self.next_mid(), m.token, opts, payload)
        self.transport.sendto(reply, addr)
        if after:
            after()

    # -- Object 9 --

    def set(self, **changes):
        """Applies resource changes (r7=..., r9=...) and notifies observers of changed ones."""
        changed = set()
        for k, v in changes.items():
            r = int(k[1:])
            if self.sw.get(r) != v:
                self.sw[r] = v
                changed.add(r)
        if changed:
            self.notify(changed)

    def notify(self, changed):
        important = (7 in changed and self.sw[7] in (3, 4)) or 12 in changed
        for token, (path, accept) in list(self.observers.items()):
            res = int(path[2]) if len(path) > 2 else None
            if res is not None and res not in changed:
                continue
            try:
                cf, body = self.encode_read(path, accept)
            except LookupError:
                continue
            self.obs_seq += 1
            mid = self.next_mid()
            mtype = CON if important else NON
            data = encode(mtype, CONTENT, mid, token,
                          [(O_OBSERVE, uint(self.obs_seq & 0xFFFFFF)), (O_CF, uint(cf))], body)
            self.transport.sendto(data, self.server)
            if mtype == CON:
                self.stats.notifications["con"] += 1
                self.pending_con[mid] = (data, token)
                asyncio.get_running_loop().create_task(self.retransmit(mid))
            else:
                self.stats.notifications["non"] += 1
                self.recent_non[mid] = token
                if len(self.recent_non) > 32:
                    self.recent_non.pop(next(iter(self.recent_non)))

    async def retransmit(self, mid):
        """CON notification retransmission (RFC 7252 §4.2), then give up."""
        timeout = 2.0 + random.random()
        for _ in range(4):
            await asyncio.sleep(timeout)
            entry = self.pending_con.get(mid)
            if entry is None:
                return
            self.transport.sendto(entry[0], self.server)
            timeout *= 2
        await asyncio.sleep(timeout)
        if self.pending_con.pop(mid, None) is not None:
            self.stats.notifications["con_lost"] += 1

    def encode_read(self, path, accept):
        """(content format, payload) of /9, /9/0 or /9/0/r; LookupError if absent,
        ValueError if the format does not fit."""
        if not path or path[0] != "9" or (len(path) > 1 and path[1] != "0"):
            raise LookupError(path)
        res = None
        if len(path) > 2:
            res = int(path[2])
            if res not in R9 or len(path) > 3:
                raise LookupError(path)
        items = [(res, R9[res], self.sw[res])] if res is not None else \
            [(r, t, self.sw[r]) for r, t in R9.items()]
        cf = accept if accept is not None else (CF_TEXT if res is not None else CF_SENML_JSON)
        if cf == CF_TEXT:
            if res is None:
                raise ValueError("text/plain only for one resource")
            return cf, text_value(items[0][1], items[0][2]).encode()
        if cf == CF_SENML_JSON:
            recs = []
            for k, (r, t, v) in enumerate(items):
                rec = {"bn": "/9/0/"} if k == 0 else {}
                rec["n"] = str(r)
                rec.update(senml_entry(t, v))
                recs.append(rec)
            return cf, json.dumps(recs, separators=(",", ":")).encode()
        if cf == CF_TLV:
            body = b"".join(tlv(3, r, tlv_value(t, v)) for r, t, v in items)
            if len(path) == 1:
                body = tlv(0, 0, body)
            return cf, body
        raise ValueError(f"format {cf}")

    def handle(self, m):
        """(code, options, payload, after) for a request; `after` runs once the reply is sent."""
        path = m.path()
        method = m.code
        if method == GET:
            accept = m.opt_uint(O_ACCEPT)
            if accept == CF_LINK:
                links = ",".join(f"</9/0/{r}>" for r in R9)
                return CONTENT, [(O_CF, uint(CF_LINK))], f"</9/0>,{links}".encode(), None
            try:
                cf, body = self.encode_read(path, accept)
            except LookupError:
                return NOT_FOUND, [], b"", None
            except ValueError:
                return NOT_ACCEPTABLE, [], b"", None
            opts = [(O_CF, uint(cf))]
            obs = m.opt_uint(O_OBSERVE)
            if obs == 0:
                self.observers[m.token] = (path, accept)
                self.obs_seq += 1
                opts.append((O_OBSERVE, uint(self.obs_seq & 0xFFFFFF)))
            elif obs == 1:
                self.observers.pop(m.token, None)
            return CONTENT, opts, body, None
        if path[:2] != ["9", "0"] or len(path) != 3:
            return NOT_FOUND if path and path[0] != "9" else NOT_ALLOWED, [], b"", None
        res = path[2]
        if method in (PUT, POST) and res == "2":
            return self.write_package(m)
        if method in (PUT, POST) and res == "3":
            return self.write_uri(m)
        if method == POST:
            args = m.payload.decode(errors="replace")
            return self.execute(res, args)
        return NOT_ALLOWED, [], b"", None

    def refuse(self, code=NOT_ALLOWED):
        self.stats.refused += 1
        return code, [], b"", None

    def execute(self, res, args):
        st = self.sw[7]
        if res == "6":  # Uninstall (§5.1.3.2); argument 1 = ForUpdate
            if st not in (3, 4):
                return self.refuse()
            for_update = any(a == "1" or a == "0='1'" for a in args.split(","))
            if for_update:
                self.stats.start(self.name)
            self.delivered_sha = None
            changes = {"r7": 0, "r9": 0, "r12": False}
            if not for_update:
                changes.update(r0="", r1="")
            return CHANGED, [], b"", lambda: self.set(**changes)
        if res == "4":  # Install (§5.1.3.1): DELIVERED -> INSTALLED, INACTIVE (§5.2)
            if st != 3:
                return self.refuse()
            version = self.installing_version

            def done():
                self.set(r1=version, r7=4, r9=2, r12=False)
            return CHANGED, [], b"", done
        if res in ("10", "11"):  # Activate / Deactivate: INSTALLED only
            if st != 4:
                return self.refuse()
            on = res == "10"
            if on:
                self.stats.stop(self.name)
            return CHANGED, [], b"", lambda: self.set(r12=on)
        return NOT_ALLOWED, [], b"", None

    def write_package(self, m):
        """Block1 write of /9/0/2 (RFC 7959 §2.5): INITIAL -> DOWNLOAD STARTED ... DELIVERED."""
        b1 = m.opt(O_BLOCK1)
        num, more, szx = parse_block(b1) if b1 is not None else (0, False, 6)
        st = self.sw[7]
        if num == 0:
            if st not in (0, 1) or self.downloading:
                return self.refuse()
            self.block1 = bytearray()
        elif st != 1:
            return self.refuse(INCOMPLETE)
        size = 16 << szx
        if num * size != len(self.block1):
            if num * size > len(self.block1):
                return self.refuse(INCOMPLETE)  # a gap: §2.9.2 Request Entity Incomplete
        else:
            self.block1 += m.payload
        self.stats.pushes["blocks"] += 1
        opts = [(O_BLOCK1, block(num, more, szx))] if b1 is not None else []
        if more:
            after = (lambda: self.set(r7=1, r9=1)) if num == 0 else None
            return CONTINUE, opts, b"", after
        data = bytes(self.block1)
        self.block1 = bytearray()
        self.stats.pushes["complete"] += 1

        def done():
            self.set(r7=1, r9=1)
            self.delivered(data)
        return CHANGED, opts, b"", done

    def write_uri(self, m):
        """Write of /9/0/3: INITIAL only; fetches the package at the next opportunity."""
        if self.sw[7] != 0 or self.downloading:
            return self.refuse()
        cf = m.opt_uint(O_CF)
        try:
            if cf in (None, CF_TEXT, CF_OPAQUE):
                uri = m.payload.decode()
            elif cf == CF_SENML_JSON:
                uri = json.loads(m.payload)[0]["vs"]
            elif cf == CF_TLV:
                uri = m.payload[2 + ((m.payload[0] >> 3) & 3):].decode()
            else:
                return UNSUPPORTED_CF, [], b"", None
        except (ValueError, KeyError, IndexError, TypeError):
            return BAD_REQUEST, [], b"", None
        scheme = urllib.parse.urlsplit(uri).scheme
        if scheme not in ("http", "coap"):
            return BAD_REQUEST, [], b"", lambda: self.set(r9=56)
        self.downloading = True

        def start():
            self.set(r7=1, r9=1)
            asyncio.get_running_loop().create_task(self.pull(uri))
        return CHANGED, [], b"", start

    async def pull(self, uri):
        try:
            if uri.startswith("http"):
                data = await asyncio.get_running_loop().run_in_executor(self.pool, http_get, uri)
                self.stats.fetches["http"] += 1
            else:
                data = await self.coap_fetch(uri)
                self.stats.fetches["coap"] += 1
            self.stats.fetches["bytes"] += len(data)
        except Exception as e:
            self.log.append((time.monotonic(), f"pull {uri}: {e!r}"))
            self.stats.fetches["errors"] += 1
            self.downloading = False
            self.stats.stop(self.name, completed=False)
            self.set(r7=0, r9=52)  # connection lost during download
            return
        self.downloading = False
        self.delivered(data)

    async def coap_fetch(self, uri):
        """Block2 GET of coap://host:port/path from this device's socket (RFC 7959 §2.4)."""
        u = urllib.parse.urlsplit(uri)
        path = [p for p in u.path.split("/") if p]
        body, num, szx = bytearray(), 0, 6
        for _ in range(1 << 16):
            r = await self.exchange(GET, path, extra=[(O_BLOCK2, block(num, False, szx))])
            if r is None or r.code != CONTENT:
                raise IOError(f"block {num}: {r.code if r else 'timeout'}")
            b2 = r.opt(O_BLOCK2)
            if b2 is None:
                return bytes(r.payload)
            rnum, more, rszx = parse_block(b2)
            if rnum * (16 << rszx) != len(body):
                raise IOError("out of order block")
            body += r.payload
            if not more:
                return bytes(body)
            szx = rszx
            num = len(body) // (16 << szx)
        raise IOError("too many blocks")

    def delivered(self, data):
        """DOWNLOADED -> integrity check -> DELIVERED or INITIAL with 53."""
        self.set(r7=2, r9=0)
        sha = hashlib.sha256(data).hexdigest()
        if sha in self.expected:
            self.delivered_sha = sha
            self.installing_version = package_version(data)
            self.set(r7=3, r9=3)
        else:
            self.stats.integrity_failures += 1
            self.stats.stop(self.name, completed=False)
            self.set(r7=0, r9=53)

    # -- client role --

    async def exchange(self, code, path, query=(), payload=b"", content_format=None,
                       attempts=4, timeout=2.0, extra=()):
        """CON request; retransmitted with back-off (RFC 7252 §4.2). Returns the response Msg."""
        token = os.urandom(4)
        opts = [(O_URI_PATH, p.encode()) for p in path]
        opts += [(O_URI_QUERY, q.encode()) for q in query]
        if content_format is not None:
            opts.append((O_CF, uint(content_format)))
        opts += list(extra)
        msg = encode(CON, code, self.next_mid(), token, opts, payload)
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
            POST, ["rd"],
            [f"ep={self.name}", f"lt={lifetime}", "lwm2m=1.1", "b=U"],
            b"</>;rt=\"oma.lwm2m\",</1/0>,</3/0>,</9/0>", content_format=CF_LINK)
        if r and r.code == CREATED:
            self.location = [v.decode() for v in r.opt_all(O_LOCATION)]
            self.observers.clear()  # a new registration ends the old observations
            return True
        return False

    async def update(self):
        r = await self.exchange(POST, self.location or ["rd"])
        return bool(r and r.code == CHANGED)

    async def keepalive(self, lifetime):
        """Update; when it fails, Register again (Core 1.1 §6.2.2). 'ok', 'reregistered', 'failed'."""
        if await self.update():
            return "ok"
        return "reregistered" if await self.register(lifetime) else "failed"

    async def deregister(self):
        r = await self.exchange(DELETE, self.location or ["rd"])
        return bool(r and r.code == DELETED)


# ---- server side helpers ----

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


# The server's admin token: `wasmdm server` writes it to <data dir>/admin-token
# at start; every /api request carries it (README "Security").
API_TOKEN = {"path": None, "value": None}


def api_token():
    if API_TOKEN["value"] is None:
        API_TOKEN["value"] = Path(API_TOKEN["path"]).read_text().strip()
    return API_TOKEN["value"]


def api(http_port, method, path, body=None, raw=None, timeout=60):
    url = f"http://127.0.0.1:{http_port}{path}"
    data, headers = None, {}
    if body is not None:
        data, headers = json.dumps(body).encode(), {"content-type": "application/json"}
    elif raw is not None:
        data, headers = raw, {"content-type": "application/octet-stream"}
    headers["authorization"] = f"Bearer {api_token()}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None


def api_devices(http_port):
    devs = api(http_port, "GET", "/api/devices")
    if isinstance(devs, dict):  # tolerate an envelope
        devs = devs.get("devices") or devs.get("data") or []
    return devs


def make_packages(wasmdm, src, versions, work):
    """{version: bytes}: the counter package packed at each version (`wasmdm pack`),
    or, without the guest directory, random blobs (devices then report
    'unknown-<sha>' versions)."""
    out = {}
    for v in versions:
        if src and (Path(src) / "manifest.toml").exists():
            d = work / f"pkg-{v}"
            shutil.copytree(src, d)
            man = (d / "manifest.toml").read_text()
            man = re.sub(r'(?m)^version = "[^"]*"', f'version = "{v}"', man, count=1)
            (d / "manifest.toml").write_text(man)
            dest = work / f"{PACKAGE}-{v}.wdm"
            subprocess.run([wasmdm, "pack", str(d), "-o", str(dest)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            out[v] = dest.read_bytes()
        else:
            out[v] = os.urandom(64 * 1024)
    return out


def check_formats(http_port, ep):
    """Reads the simulated /9 through the server's DM API in each content format
    the device offers; returns {format: values} and raises if the server decodes
    something else than the device holds."""
    want = {"/9/0/0": PACKAGE, "/9/0/7": 4, "/9/0/9": 2, "/9/0/12": True}
    out = {}
    for path, accept in (("/9", 110), ("/9/0", 11542), ("/9/0", 110), ("/9/0/7", 0),
                         ("/9/0/12", 0), ("/9/0/7", 11542), ("/9/0", None)):
        r = api(http_port, "POST", f"/api/devices/{ep}/dm",
                {"op": "read", "path": path, "accept": accept})
        vals = r.get("values") or {}
        for k, v in vals.items():
            if k in want and v != want[k]:
                raise AssertionError(f"read {path} accept {accept}: {k} = {v!r}, want {want[k]!r}")
        if not vals or r.get("code") != "2.05":
            raise AssertionError(f"read {path} accept {accept}: {r}")
        out[f"{path} accept {accept}"] = {"format": r.get("format"), "values": len(vals)}
    return out


def max_overlap(intervals):
    """Most half-open [start, end) intervals covering one instant."""
    ev = []
    for s, e in intervals:
        ev.append((s, 1))
        ev.append((e, -1))
    ev.sort(key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


async def run_campaign(args, loop, http_port, srv_pid, devices, stats, method, version,
                       package, from_version):
    """Uploads `package`, upgrades the bench group to it with `method`; returns the figures."""
    delivery, protocol = ("push", None) if method == "push" else ("pull", method.split("-")[1])
    sha = hashlib.sha256(package).hexdigest()
    for d in devices:
        d.expected[sha] = True
    f = await loop.run_in_executor(
        None, lambda: api(http_port, "POST",
                          f"/api/files?name={PACKAGE}-{version}.wdm&description=bench",
                          raw=package))
    assert f["sha256"] == sha, f
    spec = {"op": "upgrade", "package": PACKAGE, "version": from_version, "group": "bench",
            "file": sha, "delivery": delivery, "quota": args.quota,
            "timeout_secs": args.device_timeout}
    if protocol:
        spec["protocol"] = protocol
    stats.working.clear()
    stats.intervals.clear()
    dup_before = stats.duplicates
    notes_before = dict(stats.notifications)
    rss_before = rss_kib(srv_pid)
    peak = {"VmRSS": rss_before.get("VmRSS", 0)}
    sampling = True

    async def sampler():
        while sampling:
            r = rss_kib(srv_pid).get("VmRSS", 0)
            peak["VmRSS"] = max(peak["VmRSS"], r)
            await asyncio.sleep(0.1)

    samp = loop.create_task(sampler())
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    created = await loop.run_in_executor(None, lambda: api(http_port, "POST", "/api/campaigns",
                                                           spec))
    cid = created["id"]
    max_running_polled, polls, last = 0, 0, None
    deadline = t0 + args.campaign_deadline
    progress_at = 0
    while True:
        c = await loop.run_in_executor(None, lambda: api(http_port, "GET",
                                                         f"/api/campaigns/{cid}"))
        polls += 1
        running = sum(1 for j in c["jobs"] if j["status"] == "running")
        max_running_polled = max(max_running_polled, running)
        if c["status"] != "running":
            break
        if time.monotonic() - progress_at > 10:
            progress_at = time.monotonic()
            print(f"  {method}: {time.monotonic() - t0:.0f} s {json.dumps(c['summary'])}",
                  flush=True)
        if time.monotonic() > deadline:
            last = "deadline"
            await loop.run_in_executor(None, lambda: api(http_port, "POST",
                                                         f"/api/campaigns/{cid}/cancel", {}))
            c = await loop.run_in_executor(None, lambda: api(http_port, "GET",
                                                             f"/api/campaigns/{cid}"))
            break
        await asyncio.sleep(0.5)
    took = time.monotonic() - t0
    sampling = False
    await samp
    rss_peak = peak["VmRSS"]
    rss_after = rss_kib(srv_pid)
    await asyncio.sleep(2)
    rss_after_2s = rss_kib(srv_pid)
    jobs = c["jobs"]
    durs = [(j["finished_at"] - j["started_at"]) for j in jobs
            if j["status"] == "done" and j.get("started_at") and j.get("finished_at")]
    intervals = [(j["started_at"], j["finished_at"]) for j in jobs
                 if j.get("started_at") and j.get("finished_at")]
    ends = [j["finished_at"] for j in jobs if j.get("finished_at")]
    by_name = {d.name: d for d in devices}
    verified = sum(1 for j in jobs if j["status"] == "done"
                   and by_name[j["endpoint"]].sw[1] == version
                   and by_name[j["endpoint"]].sw[7] == 4
                   and by_name[j["endpoint"]].sw[12] is True
                   and by_name[j["endpoint"]].delivered_sha == sha)
    new_versions = {}
    for j in jobs:
        for t in j.get("targets") or []:
            new_versions[t.get("new_version")] = new_versions.get(t.get("new_version"), 0) + 1
    failures = {}
    for j in jobs:
        if j["status"] not in ("done",):
            key = f"{j['status']}: {j.get('details')}"
            failures[key] = failures.get(key, 0) + 1
    res = {
        "method": method, "devices": len(jobs), "quota": args.quota,
        "package_bytes": len(package), "from_version": from_version, "to_version": version,
        "status": c["status"], "summary": c["summary"], "deadline_hit": last == "deadline",
        "duration_s": took,
        "duration_server_s": (max(ends) - c["created_at"]) / 1000 if ends else None,
        "per_device_ms": summary(durs),
        "max_running_polled": max_running_polled, "polls": polls,
        "max_running_server_report": max_overlap(intervals),
        # Device side: from Uninstall(1) to Activate on the device; devices whose
        # upgrade did not complete there are counted apart.
        "max_working_device_side": max_overlap(stats.intervals),
        "device_side_incomplete": len(stats.working),
        "duplicate_requests": stats.duplicates - dup_before,
        "verified_devices": verified, "new_versions": new_versions,
        "failures": dict(sorted(failures.items(), key=lambda kv: -kv[1])[:10]),
        "notifications": {k: stats.notifications[k] - notes_before[k]
                          for k in stats.notifications},
        "rss_before_kib": rss_before.get("VmRSS"), "rss_peak_kib": rss_peak,
        "rss_after_kib": rss_after.get("VmRSS"), "rss_after_2s_kib": rss_after_2s.get("VmRSS"),
        "vmhwm_after_kib": rss_after_2s.get("VmHWM"),
        # 1-minute load average of the machine (other work shares it).
        "loadavg_1m": [load_before, os.getloadavg()[0]],
    }
    return res


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasmdm", default=str(ROOT / "target/release/wasmdm"))
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--lifetime", type=int, default=30)
    ap.add_argument("--keepalive", type=float, default=60)
    ap.add_argument("--campaigns", default="pull-http,push",
                    help="comma list of pull-http, push, pull-coap ('' = none)")
    ap.add_argument("--campaign-devices", type=int, default=None,
                    help="devices in the upgrade group (default: all)")
    ap.add_argument("--quota", type=int, default=50)
    ap.add_argument("--device-timeout", type=int, default=300,
                    help="campaign timeout_secs per device")
    ap.add_argument("--campaign-deadline", type=float, default=1800,
                    help="cancel a campaign still running after this many seconds")
    ap.add_argument("--package-from", default=str(ROOT / "guest-examples/out/pkg/counter"),
                    help="package directory packed at each version (random blob if absent)")
    ap.add_argument("--http-threads", type=int, default=16,
                    help="threads the simulated devices fetch HTTP pulls with")
    ap.add_argument("--out", default="bench-lwm2m-scale.json")
    args = ap.parse_args()
    methods = [m for m in args.campaigns.split(",") if m]
    for m in methods:
        if m not in ("pull-http", "push", "pull-coap"):
            ap.error(f"unknown campaign method {m}")
    ncamp = min(args.campaign_devices or args.devices, args.devices)

    work = Path(tempfile.mkdtemp(prefix="wasmdm-bench-scale-"))
    coap_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    log = open(work / "server.log", "w")
    API_TOKEN["path"] = work / "data" / "admin-token"
    srv = await asyncio.create_subprocess_exec(
        args.wasmdm, "server", "--coap", f"127.0.0.1:{coap_port}", "--http",
        f"127.0.0.1:{http_port}", "--data-dir", str(work / "data"),
        # The simulated devices speak plain CoAP and hold no credentials
        # (a DTLS run of Register: scripts/bench-dtls.sh register).
        "--allow-nosec", "--no-coaps",
        stdout=log, stderr=log, env=dict(os.environ, NO_COLOR="1"))
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpus": os.cpu_count(),
               "binary": args.wasmdm, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "invocation": os.environ.get("BENCH_INVOCATION"),
               "devices": args.devices, "window": args.window, "lifetime": args.lifetime}
    stats = Stats()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.http_threads)
    keep = {"on": False, "ok": 0, "reregistered": 0, "failed": 0}
    ka_task = None
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
                lambda i=i: SimDevice(f"sim-{i:05d}", ("127.0.0.1", coap_port), stats, pool),
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

        # Phase 3: group upgrade campaigns; Updates continue in the background.
        if methods:
            async def bg_update(d):
                async with sem:
                    if keep["on"]:
                        keep[await d.keepalive(args.lifetime)] += 1

            async def background_keepalive():
                while keep["on"]:
                    t = time.monotonic()
                    await asyncio.gather(*(bg_update(d) for d in devices))
                    while keep["on"] and time.monotonic() - t < period:
                        await asyncio.sleep(0.2)

            results["read_formats"] = await loop.run_in_executor(
                None, check_formats, http_port, devices[0].name)
            keep["on"] = True
            ka_task = loop.create_task(background_keepalive())
            versions = [f"{k + 2}.0.0" for k in range(len(methods))]
            packages = await loop.run_in_executor(
                None, make_packages, args.wasmdm, args.package_from, versions, work)
            group = [d.name for d in devices[:ncamp]]
            await loop.run_in_executor(None, lambda: api(http_port, "PUT", "/api/groups/bench",
                                                         {"endpoints": group}))
            results["campaigns"] = []
            prev = "1.0.0"
            for method, version in zip(methods, versions):
                r = await run_campaign(args, loop, http_port, srv.pid, devices[:ncamp], stats,
                                       method, version, packages[version], prev)
                results["campaigns"].append(r)
                print(json.dumps(r), flush=True)
                assert r["max_running_server_report"] <= args.quota, r
                assert r["max_running_polled"] <= args.quota, r
                assert r["max_working_device_side"] <= args.quota, r
                prev = version
            keep["on"] = False
            await ka_task
            ka_task = None
            results["keepalive_during_campaigns"] = {
                "updates_ok": keep["ok"], "reregistered": keep["reregistered"],
                "failed": keep["failed"]}
            results["device_side"] = {
                "fetches": stats.fetches, "pushes": stats.pushes,
                "integrity_failures": stats.integrity_failures,
                "refused_requests": stats.refused,
                "server_requests_seen": sum(d.server_requests for d in devices),
            }
            print(json.dumps(results["device_side"]), flush=True)

        # Phase 4: De-register.
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
        keep["on"] = False
        if ka_task is not None:
            ka_task.cancel()
        if srv.returncode is None:
            srv.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(srv.wait(), 15)
            except asyncio.TimeoutError:
                srv.kill()
                await srv.wait()
        log.close()
        pool.shutdown(wait=False, cancel_futures=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        if os.environ.get("BENCH_KEEP_WORK"):
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
