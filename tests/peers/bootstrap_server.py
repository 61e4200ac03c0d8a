#!/usr/bin/env python3
"""A small LwM2M bootstrap server on aiocoap, an independent CoAP stack
(LwM2M 1.1 Core §5.2, §6.1), for the device's bootstrap tests.

Usage: bootstrap_server.py PORT SESSIONS SERVER_URI SSID IDENTITY KEY_HEX

Listens on udp 127.0.0.1:PORT (plain CoAP). Each Bootstrap-Request
(POST /bs?ep=NAME) is answered 2.04, then the next mode of SESSIONS (a comma
list; the last one repeats) runs against the requesting device:

- ok: Bootstrap-Delete /, Bootstrap-Delete /9 (the device must refuse),
  Bootstrap-Discover /, Bootstrap-Write /0/1 (SenML JSON: SERVER_URI, PSK,
  IDENTITY, KEY, SSID) and /1/1 (TLV: SSID, lifetime 60, binding U),
  Bootstrap-Read /1/1, Bootstrap-Finish.
- inconsistent: Bootstrap-Delete /, Bootstrap-Write /0/1 only (no /1
  instance), Bootstrap-Finish.
- stall: both Writes, then nothing (no Finish).
- nosec=URI: Bootstrap-Delete /, then a NoSec account for URI (/0/1 mode 3)
  whose /1/1 says Communication Retry Count 2, Retry Timer 1 s
  (/1/1/17, /1/1/18), Bootstrap-Finish.

Every step prints one JSON line: {"ep", "op", "code", "payload"}; a
Bootstrap-Request prints {"event": "request", "ep", "query"}.
"""

import asyncio
import base64
import json
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import DELETE, GET, POST, PUT, Message


def out(**fields):
    print(json.dumps(fields), flush=True)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tlv(rid: int, value: bytes) -> bytes:
    """One Resource TLV with an 8-bit id (Core 1.1 §7.4.3)."""
    n = len(value)
    if n < 8:
        return bytes([0xC0 | n, rid]) + value
    return bytes([0xC8, rid, n]) + value


class Bootstrap(resource.Resource):
    def __init__(self, ctx_holder, args):
        super().__init__()
        self.ctx_holder = ctx_holder
        self.modes = args["sessions"].split(",")
        self.args = args
        self.sessions = 0

    async def render_post(self, request):
        query = list(request.opt.uri_query)
        ep = next((q[3:] for q in query if q.startswith("ep=")), "")
        out(event="request", ep=ep, query=query)
        mode = self.modes[min(self.sessions, len(self.modes) - 1)]
        self.sessions += 1
        device = request.remote.hostinfo
        asyncio.get_event_loop().create_task(self.session(mode, ep, device))
        return Message(code=aiocoap.CHANGED)

    async def step(self, ep, device, op, code, path, payload=b"", cf=None, accept=None):
        uri = f"coap://{device}{path}"
        msg = Message(code=code, uri=uri, payload=payload)
        if cf is not None:
            msg.opt.content_format = cf
        if accept is not None:
            msg.opt.accept = accept
        resp = await asyncio.wait_for(self.ctx_holder[0].request(msg).response, timeout=30)
        out(
            ep=ep,
            op=op,
            code=str(resp.code).split(" ")[0],
            payload=resp.payload.decode("utf-8", "replace"),
        )
        return resp

    async def session(self, mode, ep, device):
        await asyncio.sleep(0.05)
        a = self.args
        security = json.dumps(
            [
                {"bn": "/0/1/", "n": "0", "vs": a["uri"]},
                {"n": "1", "vb": False},
                {"n": "2", "v": 0},
                {"n": "3", "vd": b64(a["identity"].encode())},
                {"n": "4", "vd": ""},
                {"n": "5", "vd": b64(bytes.fromhex(a["key"]))},
                {"n": "10", "v": a["ssid"]},
            ]
        ).encode()
        server = (
            tlv(0, a["ssid"].to_bytes(2, "big"))
            + tlv(1, (60).to_bytes(1, "big"))
            + tlv(6, b"\x01")
            + tlv(7, b"U")
        )
        nosec_uri = mode[len("nosec="):] if mode.startswith("nosec=") else None
        if nosec_uri is not None:
            security = json.dumps(
                [
                    {"bn": "/0/1/", "n": "0", "vs": nosec_uri},
                    {"n": "1", "vb": False},
                    {"n": "2", "v": 3},
                    {"n": "10", "v": a["ssid"]},
                ]
            ).encode()
            server += tlv(17, b"\x02") + tlv(18, b"\x01")
            mode = "nosec"
        try:
            if mode in ("ok", "inconsistent", "nosec"):
                await self.step(ep, device, "delete /", DELETE, "/")
            if mode == "ok":
                await self.step(ep, device, "delete /9", DELETE, "/9")
                await self.step(ep, device, "discover /", GET, "/", accept=40)
            await self.step(ep, device, "write /0/1", PUT, "/0/1", security, cf=110)
            if mode in ("ok", "stall", "nosec"):
                await self.step(ep, device, "write /1/1", PUT, "/1/1", server, cf=11542)
            if mode == "stall":
                out(ep=ep, op="stalled", code="", payload="")
                return
            if mode == "ok":
                await self.step(ep, device, "read /1/1", GET, "/1/1", accept=110)
            await self.step(ep, device, "finish", POST, "/bs")
        except Exception as e:  # noqa: BLE001 - report and go on serving
            out(ep=ep, op="error", code="", payload=repr(e))


async def main():
    port, sessions, uri, ssid, identity, key = sys.argv[1:7]
    args = {
        "sessions": sessions,
        "uri": uri,
        "ssid": int(ssid),
        "identity": identity,
        "key": key,
    }
    holder = [None]
    site = resource.Site()
    site.add_resource(["bs"], Bootstrap(holder, args))
    holder[0] = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", int(port)))
    out(event="listening", port=int(port))
    await asyncio.get_event_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
