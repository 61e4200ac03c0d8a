"""A minimal LwM2M server peer on one UDP socket, for the bench and probe drivers.

`wasmdm device` obeys only its server: in NoSec mode it answers requests only
from the address and port it registered with (README, Security). So every
request a benchmark or probe sends to the device has to leave from the socket
the device registered with. `ServerPeer` is that socket: it answers the
device's Register / Update / De-register (LwM2M 1.1 Transport §6) and sends
CoAP requests (RFC 7252, written and parsed here: no CoAP library in the
timed path), with Observe (RFC 7641) and Block1 pushes (RFC 7959).

`CoapClient` is the other direction (a device-like client of `wasmdm server`),
used to send registrations.
"""

import asyncio
import os
import random
import struct
import time

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 1, 2, 3, 4
URI_PATH, URI_QUERY, CONTENT_FORMAT, ACCEPT = 11, 15, 12, 17
OBSERVE, LOCATION_PATH, BLOCK2, BLOCK1, SIZE1 = 6, 8, 23, 27, 60


def code_str(code):
    return f"{code >> 5}.{code & 31:02d}"


def code_of(s):
    """0x44 from "2.04"."""
    c, d = s.split(".")
    return (int(c) << 5) | int(d)


def uint(v):
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


def encode(mtype, code, mid, token, options=(), payload=b""):
    """One CoAP datagram; `options` is a list of (number, bytes)."""
    b = bytearray([0x40 | (mtype << 4) | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        delta, length = num - last, len(val)
        last = num

        def nib(x):
            if x < 13:
                return x, b""
            if x < 269:
                return 13, bytes([x - 13])
            return 14, struct.pack(">H", x - 269)

        dn, dx = nib(delta)
        ln, lx = nib(length)
        b.append((dn << 4) | ln)
        b += dx + lx + val
    if payload:
        b += b"\xff" + payload
    return bytes(b)


class Msg:
    """A parsed datagram."""

    __slots__ = ("mtype", "code", "mid", "token", "options", "payload")

    def __init__(self, data):
        if len(data) < 4 or data[0] >> 6 != 1:
            raise ValueError("not CoAP")
        tkl = data[0] & 0x0F
        self.mtype = (data[0] >> 4) & 0x03
        self.code = data[1]
        self.mid = struct.unpack(">H", data[2:4])[0]
        self.token = data[4:4 + tkl]
        self.options = {}
        i, opt = 4 + tkl, 0
        self.payload = b""
        while i < len(data):
            if data[i] == 0xFF:
                self.payload = data[i + 1:]
                break
            delta, length = data[i] >> 4, data[i] & 0x0F
            i += 1
            if delta == 13:
                delta = data[i] + 13
                i += 1
            elif delta == 14:
                delta = struct.unpack(">H", data[i:i + 2])[0] + 269
                i += 2
            if length == 13:
                length = data[i] + 13
                i += 1
            elif length == 14:
                length = struct.unpack(">H", data[i:i + 2])[0] + 269
                i += 2
            opt += delta
            self.options.setdefault(opt, []).append(data[i:i + length])
            i += length

    def path(self):
        return [p.decode("utf-8", "replace") for p in self.options.get(URI_PATH, [])]

    def queries(self):
        return [q.decode("utf-8", "replace") for q in self.options.get(URI_QUERY, [])]

    def opt_uint(self, num):
        v = self.options.get(num)
        return int.from_bytes(v[0], "big") if v else None

    def block(self, num):
        """(block number, more, szx) of a Block1/Block2 option, or None."""
        v = self.opt_uint(num)
        return None if v is None else (v >> 4, bool(v & 8), v & 7)

    @property
    def code_s(self):
        return code_str(self.code)


def path_options(path):
    return [(URI_PATH, seg.encode()) for seg in path.strip("/").split("/") if seg]


class _Peer(asyncio.DatagramProtocol):
    """Request/response matching by token, CON retransmission, ACKs of CON responses."""

    def __init__(self):
        self.transport = None
        self.mid = random.randrange(65536)
        self.pending = {}  # token -> future of (arrival monotonic time, Msg)
        self.observers = {}  # token -> asyncio.Queue of (time, Msg)
        self.handlers = {}  # token -> callable(time, Msg), for callers that follow up themselves
        self.stray = 0  # responses matching nothing

    def connection_made(self, transport):
        self.transport = transport

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send(self, data, addr):
        self.transport.sendto(data, addr)

    def datagram_received(self, data, addr):
        now = time.monotonic()
        try:
            m = Msg(data)
        except (ValueError, IndexError, struct.error):
            return
        if 1 <= m.code < 32:
            self.on_request(m, addr)
            return
        if m.code == 0:
            return  # empty ACK (a separate response follows) or RST
        if m.mtype == CON:
            self.send(encode(ACK, 0, m.mid, b""), addr)
        handler = self.handlers.get(m.token)
        if handler is not None:
            handler(now, m)
            return
        fut = self.pending.pop(m.token, None)
        if fut is not None:
            if not fut.done():
                fut.set_result((now, m))
            return
        q = self.observers.get(m.token)
        if q is not None:
            q.put_nowait((now, m))
            return
        self.stray += 1

    def on_request(self, m, addr):
        if m.mtype == CON:
            self.send(encode(ACK, code_of("4.04"), m.mid, m.token), addr)

    def start_request(self, addr, code, path, payload=b"", options=(), token=None,
                      con=True, retransmit=True):
        """Sends a request; returns (token, future of (time, Msg))."""
        token = token or os.urandom(4)
        fut = asyncio.get_running_loop().create_future()
        self.pending[token] = fut
        data = encode(CON if con else NON, code, self.next_mid(), token,
                      path_options(path) + list(options), payload)
        self.send(data, addr)
        if con and retransmit:
            asyncio.get_running_loop().create_task(self._retransmit(data, addr, fut))
        return token, fut

    async def _retransmit(self, data, addr, fut, timeout=2.0, tries=4):
        for _ in range(tries):
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
                return
            except asyncio.TimeoutError:
                if fut.done():
                    return
                self.send(data, addr)
                timeout *= 2
            except Exception:
                return


class ServerPeer(_Peer):
    """The device's LwM2M server: registration and requests from one socket."""

    def __init__(self):
        super().__init__()
        self.device = None  # (host, port) of the registered device
        self.registered = None
        self.registrations = 0
        self.updates = 0
        self.port = None

    @classmethod
    async def start(cls, host="127.0.0.1", port=0):
        loop = asyncio.get_running_loop()
        self = cls()
        self.registered = asyncio.Event()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def close(self):
        if self.transport:
            self.transport.close()

    def on_request(self, m, addr):
        path = m.path()
        if path[:1] == ["rd"] and m.code == POST:
            if len(path) == 1:
                self.registrations += 1
                self.device = addr
                code, opts = code_of("2.01"), [(LOCATION_PATH, b"rd"), (LOCATION_PATH, b"x")]
            else:
                self.updates += 1
                code, opts = code_of("2.04"), []
        elif path[:1] == ["rd"] and m.code == DELETE:
            code, opts = code_of("2.02"), []
        else:
            code, opts = code_of("4.04"), []
        mtype = ACK if m.mtype == CON else NON
        mid = m.mid if m.mtype == CON else self.next_mid()
        self.send(encode(mtype, code, mid, m.token, opts), addr)
        if path[:1] == ["rd"] and len(path) == 1:
            self.registered.set()

    async def wait_registered(self, timeout=60):
        await asyncio.wait_for(self.registered.wait(), timeout)

    def uri(self, path):
        return f"coap://{self.device[0]}:{self.device[1]}{path}"

    def send_to_device(self, code, path, payload=b"", options=(), token=None, con=True,
                       retransmit=True):
        """Starts a request to the device; (token, future of (time, Msg))."""
        return self.start_request(self.device, code, path, payload, options, token, con,
                                  retransmit)

    async def request(self, code, path, payload=b"", options=(), timeout=30):
        """The device's response (follows Block2 for GETs)."""
        _, fut = self.send_to_device(code, path, payload, options)
        _, m = await asyncio.wait_for(fut, timeout)
        if code == GET and m.block(BLOCK2) and m.block(BLOCK2)[1]:
            body = bytearray(m.payload)
            while m.block(BLOCK2) and m.block(BLOCK2)[1]:
                num, _, szx = m.block(BLOCK2)
                extra = [o for o in options if o[0] != BLOCK2] + [(BLOCK2, uint(((num + 1) << 4) | szx))]
                _, fut = self.send_to_device(GET, path, b"", extra)
                _, m = await asyncio.wait_for(fut, timeout)
                body += m.payload
            m.payload = bytes(body)
        return m

    async def read_text(self, path):
        m = await self.request(GET, path, options=[(ACCEPT, b"")])
        if m.code >> 5 != 2:
            raise RuntimeError(f"read {path}: {m.code_s}")
        return m.payload.decode()

    async def execute(self, path, arg=b""):
        m = await self.request(POST, path, arg)
        if m.code >> 5 != 2:
            raise RuntimeError(f"execute {path}: {m.code_s}")
        return m

    async def write_text(self, path, text):
        m = await self.request(PUT, path, text.encode(), [(CONTENT_FORMAT, b"")])
        if m.code >> 5 != 2:
            raise RuntimeError(f"write {path}: {m.code_s}")
        return m

    async def observe(self, path, timeout=10):
        """Starts observing a text resource: (first Msg, queue of (time, Msg) notifications)."""
        token = os.urandom(6)
        q = asyncio.Queue()
        self.observers[token] = q
        _, fut = self.send_to_device(GET, path, options=[(OBSERVE, b""), (ACCEPT, b"")], token=token)
        _, first = await asyncio.wait_for(fut, timeout)
        return first, q

    async def push_block1(self, path, data, content_format=42, szx=6, timeout=30):
        """Block1 PUT of `data` (RFC 7959 §2.5), one block in flight; the final response.

        Lean on purpose (one future and one timer per block, no task): the
        transfer benchmark compares this sender's pace with libcoap's."""
        loop = asyncio.get_running_loop()
        size = 1 << (szx + 4)
        base = path_options(path) + [(CONTENT_FORMAT, uint(content_format))]
        deadline = time.monotonic() + timeout
        num = 0
        while True:
            chunk = data[num * size:(num + 1) * size]
            more = (num + 1) * size < len(data)
            opts = base + [(BLOCK1, uint((num << 4) | (8 if more else 0) | szx))]
            if num == 0:
                opts.append((SIZE1, uint(len(data))))
            token = os.urandom(4)
            fut = loop.create_future()
            self.pending[token] = fut
            datagram = encode(CON, PUT, self.next_mid(), token, opts, chunk)
            wait = 2.0
            while True:
                self.send(datagram, self.device)
                timer = loop.call_later(wait, lambda f=fut: f.done() or f.set_result(None))
                got = await fut
                timer.cancel()
                if got is not None:
                    break
                if time.monotonic() > deadline:
                    self.pending.pop(token, None)
                    raise asyncio.TimeoutError(f"push {path}: block {num} unanswered")
                fut = loop.create_future()
                self.pending[token] = fut
                wait *= 2
            _, m = got
            if m.code >> 5 != 2:
                raise RuntimeError(f"push {path} block {num}: {m.code_s}")
            if not more:
                return m
            b1 = m.block(BLOCK1)
            if b1 and b1[2] < szx:  # the device asked for smaller blocks
                offset = (num + 1) * size
                szx = b1[2]
                size = 1 << (szx + 4)
                num = offset // size
            else:
                num += 1


class CoapClient(_Peer):
    """A plain CoAP client socket (requests to one server)."""

    @classmethod
    async def start(cls, server, host="127.0.0.1"):
        loop = asyncio.get_running_loop()
        self = cls()
        self.server = server
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        return self

    def close(self):
        if self.transport:
            self.transport.close()

    def request(self, code, path, payload=b"", options=(), retransmit=True):
        return self.start_request(self.server, code, path, payload, options,
                                  retransmit=retransmit)[1]
