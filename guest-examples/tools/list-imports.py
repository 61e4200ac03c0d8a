#!/usr/bin/env python3
"""Lists the top-level import and export names of a wasm component binary.

wasm-tools is not installed on dev machines; this reads just enough of the
component binary format (import section id 10, export section id 11) to show
what a host linker must provide. Usage: list-imports.py out/counter.wasm
"""
import sys

def leb(b, i):
    r = s = 0
    while True:
        x = b[i]; i += 1
        r |= (x & 0x7f) << s; s += 7
        if x < 0x80: return r, i

def name(b, i):
    n, i = leb(b, i)
    return b[i:i+n].decode(), i + n

def externdesc(b, i):
    k = b[i]; i += 1
    if k == 0x00:
        i += 1; _, i = leb(b, i)
    elif k in (0x01, 0x04, 0x05):
        _, i = leb(b, i)
    elif k == 0x02:
        t = b[i]; i += 1
        if t == 0x00: _, i = leb(b, i)
        else: _, i = leb(b, i)   # 0x01 valtype: may be a primitive byte or typeidx (sleb); rare at top level
    elif k == 0x03:
        t = b[i]; i += 1
        if t == 0x00: _, i = leb(b, i)
    return k, i

KIND = {0: "core-module", 1: "func", 2: "value", 3: "type", 4: "component", 5: "instance"}

def main(path):
    b = open(path, "rb").read()
    assert b[:8] == bytes.fromhex("0061736d0d000100"), "not a component"
    i = 8
    while i < len(b):
        sid = b[i]; i += 1
        size, i = leb(b, i)
        end = i + size
        if sid in (10, 11):  # import, export
            cnt, j = leb(b, i)
            for _ in range(cnt):
                tag = b[j]; j += 1
                nm, j = name(b, j)
                if tag == 0x01:  # legacy with url
                    _, j = name(b, j)
                if sid == 11:
                    j += 1  # sort
                    if b[j-1] == 0x00: j += 1
                    _, j = leb(b, j)
                    opt = b[j]; j += 1
                    if opt == 1: _, j = externdesc(b, j)
                    print(f"export {nm}")
                else:
                    k, j = externdesc(b, j)
                    print(f"import {KIND.get(k, k)} {nm}")
        i = end

for path in sys.argv[1:]:
    main(path)
