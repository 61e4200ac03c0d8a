#!/usr/bin/env python3
"""Serves one file over CoAP Block2 slowly, with aiocoap (an independent stack).

Usage: coap_slow_file.py <port> <file> [--delay-ms D] [--stall-from N] [--no-etag]

The file is served at coap://127.0.0.1:<port>/<basename of file> in 1024-byte
blocks (szx 6, or the smaller size the client asks for, RFC 7959 §2.4), each
answer after D ms (default 2), with an ETag of the file's content (the first
8 bytes of its sha256): the file is re-read whenever its size or mtime
changes, so a test can change it between two requests and the ETag follows.
With --no-etag no ETag is sent at all.

With --stall-from N a request for block N or later is held unanswered until
a line "release" arrives on stdin (the test kills its client meanwhile).

Prints one JSON line per event on stdout, flushed:
  {"ready": port}                                   once listening
  {"block": num, "szx": szx, "etags": [hex, ...]}   per GET as it arrives
                                                    (etags: the request's ETag options)
  {"released": true}                                after "release"
Exits when stdin closes.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys

import aiocoap
from aiocoap import Context, Message, resource
from aiocoap.numbers.codes import BAD_OPTION, CONTENT
from aiocoap.optiontypes import BlockOption


def say(obj):
    print(json.dumps(obj), flush=True)


class SlowFile(resource.Resource):
    def __init__(self, path, delay, stall_from, released, send_etag):
        super().__init__()
        self.send_etag = send_etag
        self.path = path
        self.delay = delay
        self.stall_from = stall_from
        self.released = released
        self.stat = None
        self.data = b""
        self.etag = b""

    async def needs_blockwise_assembly(self, request):
        # Block2 is handled here, block by block, so every request is seen.
        return False

    def load(self):
        st = os.stat(self.path)
        key = (st.st_size, st.st_mtime_ns)
        if key != self.stat:
            with open(self.path, "rb") as f:
                self.data = f.read()
            self.etag = hashlib.sha256(self.data).digest()[:8]
            self.stat = key

    async def render_get(self, request):
        block = request.opt.block2 or BlockOption.BlockwiseTuple(0, 0, 6)
        szx = min(block.size_exponent, 6)
        num = block.block_number
        say({"block": num, "szx": szx, "etags": [t.hex() for t in request.opt.etags]})
        if self.stall_from is not None and num >= self.stall_from:
            await self.released.wait()
        await asyncio.sleep(self.delay)
        self.load()
        size = 2 ** (szx + 4)
        start = num * size
        if start >= len(self.data) and start > 0:
            return Message(code=BAD_OPTION)
        payload = self.data[start : start + size]
        more = start + size < len(self.data)
        response = Message(code=CONTENT, payload=payload, content_format=42)
        response.opt.block2 = BlockOption.BlockwiseTuple(num, more, szx)
        if self.send_etag:
            response.opt.etag = self.etag
        return response


async def read_stdin(released):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip() == "release":
            released.set()
            say({"released": True})


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("file")
    ap.add_argument("--delay-ms", type=float, default=2)
    ap.add_argument("--stall-from", type=int, default=None)
    ap.add_argument("--no-etag", action="store_true")
    args = ap.parse_args()
    released = asyncio.Event()
    site = resource.Site()
    res = SlowFile(args.file, args.delay_ms / 1000, args.stall_from, released, not args.no_etag)
    res.load()
    site.add_resource([os.path.basename(args.file)], res)
    ctx = await Context.create_server_context(site, bind=("127.0.0.1", args.port))
    say({"ready": args.port, "aiocoap": aiocoap.meta.version})
    try:
        await read_stdin(released)
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
