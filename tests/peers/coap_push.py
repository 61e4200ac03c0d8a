#!/usr/bin/env python3
"""Pushes a file to a CoAP resource with aiocoap, an independent CoAP stack.

Usage: coap_push.py <uri> <file> [content-format]

The PUT goes through aiocoap's managed block-wise transfer (RFC 7959 Block1),
which cuts the body into blocks of 2**(szx+4) bytes; szx is pinned to 6 so
the device sees 1024-byte blocks. Prints one JSON line: the final response
code ("2.04"), its Block1 option as [num, more, szx] (or null) and its payload,
so a Rust test can assert on what the device answered, plus "blocks": the
Block1 option of every block acknowledgement as [num, more, szx] (aiocoap
strips Block1 from the final response it hands back, so they are taken from
its debug log).
"""

import asyncio
import json
import logging
import sys

from aiocoap import PUT, Context, Message
from aiocoap.numbers.constants import MAX_REGULAR_BLOCK_SIZE_EXP


class Block1Acks(logging.Handler):
    """Collects aiocoap's "Response with Block1 option received" records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.acks = []

    def emit(self, record):
        if isinstance(record.msg, str) and record.msg.startswith("Response with Block1 option received"):
            self.acks.append([int(a) for a in record.args])


async def push(uri: str, body: bytes, content_format: int) -> dict:
    acks = Block1Acks()
    coap_log = logging.getLogger("coap")
    coap_log.setLevel(logging.DEBUG)
    coap_log.addHandler(acks)
    coap_log.propagate = False
    ctx = await Context.create_client_context()
    try:
        request = Message(code=PUT, uri=uri, payload=body, content_format=content_format)
        # 1024-byte blocks (szx 6): aiocoap's default for UDP, stated explicitly.
        assert MAX_REGULAR_BLOCK_SIZE_EXP == 6
        response = await asyncio.wait_for(ctx.request(request).response, timeout=60)
        block1 = response.opt.block1
        return {
            "code": str(response.code).split(" ")[0],
            "block1": None
            if block1 is None
            else [block1.block_number, int(block1.more), block1.size_exponent],
            "payload": response.payload.decode("utf-8", "replace"),
            "blocks": acks.acks,
        }
    finally:
        await ctx.shutdown()


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    uri, path = sys.argv[1], sys.argv[2]
    content_format = int(sys.argv[3]) if len(sys.argv) > 3 else 42
    with open(path, "rb") as f:
        body = f.read()
    try:
        result = asyncio.run(push(uri, body, content_format))
    except Exception as e:  # report transport failures as data, not a traceback
        result = {"code": None, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
