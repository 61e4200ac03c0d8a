#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/: small, real inputs of each format,
mostly taken from the crates' own test vectors (the Core 1.1 Device /3/0 example, the
reference's Execute arguments, the README manifest). Deterministic; run from anywhere.
Only the standard library: the seeds are committed, this records how they were made.
Files named regress-* are inputs the fuzzer found failing, kept as they are (not made here)."""

import hashlib
import io
import os
import struct
import tarfile
import gzip

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def h(s):
    return bytes.fromhex("".join(s.split()))


# ---- CoAP (RFC 7252 §3) ------------------------------------------------------------------
def opt(delta, value):
    def nib(n):
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack(">H", n - 269)

    d, dx = nib(delta)
    l, lx = nib(len(value))
    return bytes([(d << 4) | l]) + dx + lx + value


def msg(typ, code, mid, token, options, payload=b""):
    out = bytes([0x40 | (typ << 4) | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for number, value in options:
        out += opt(number - last, value)
        last = number
    if payload:
        out += b"\xff" + payload
    return out


CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT = 0x01, 0x02, 0x03
CONTENT, CHANGED = 0x45, 0x44

put("coap_msg", "get-3-0-tlv", msg(CON, GET, 0x1234, b"\xab\xcd", [(11, b"3"), (11, b"0"), (17, b"\x2d\x16")]))
put("coap_msg", "register", msg(CON, POST, 1, b"\x01\x02\x03\x04", [
    (11, b"rd"), (12, b"\x28"), (15, b"ep=sensor-17"), (15, b"lt=300"), (15, b"lwm2m=1.1"), (15, b"b=U")],
    b'</>;rt="oma.lwm2m";ct="60 110 112 11542",</1/0>,</3/0>,</9>;ver=1.0'))
put("coap_msg", "content-senml", msg(ACK, CONTENT, 0x1234, b"\xab\xcd", [(12, b"\x6e")],
    b'[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"}]'))
put("coap_msg", "block2-more", msg(ACK, CONTENT, 7, b"\x07", [(12, b"\x2a"), (23, b"\x0a")], b"\x00" * 64))
put("coap_msg", "notify", msg(NON, CONTENT, 9, b"\x11\x22", [(6, b"\x05"), (12, b"\x2d\x16")], h("C1 09 64")))
put("coap_msg", "empty-ack", msg(ACK, 0, 0x1234, b"", []))
put("coap_msg", "rst", msg(RST, 0, 0x4321, b"", []))
put("coap_msg", "execute-args", msg(CON, POST, 3, b"\x33", [(11, b"9"), (11, b"0"), (11, b"4"), (12, b"")], b"0='v1',1"))
put("coap_msg", "block1-put", msg(CON, PUT, 5, b"\x55", [(11, b"9"), (11, b"0"), (11, b"2"), (12, b"\x2a"), (27, b"\x1e"), (60, b"\x02\x00")], b"\x1f\x8b" + b"\x00" * 30))
put("coap_msg", "long-query", msg(CON, GET, 6, b"\x66" * 8, [(15, b"x" * 300)]))

# ---- OMA-TLV (Core 1.1 §7.4.3) -----------------------------------------------------------
DEVICE = h("""C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
 C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
 C8 02 09 33 34 35 30 30 30 31 32 33
 C3 03 31 2E 30
 86 06 41 00 01 41 01 05
 88 07 08 42 00 0E D8 42 01 13 88
 87 08 41 00 7D 42 01 03 84
 C1 09 64
 C1 0A 0F
 83 0B 41 00 00
 C4 0D 51 82 42 8F
 C6 0E 2B 30 32 3A 30 30
 C1 10 55""")
put("tlv", "device-instance", DEVICE)
put("tlv", "device-object", h("08 00 79") + DEVICE)
put("tlv", "multiple-resource", h("86 06 41 00 01 41 01 05"))
put("tlv", "single-integer", h("C1 09 64"))
put("tlv", "float-and-objlink", h("C4 03 41 20 00 00 C8 07 08 40 24 00 00 00 00 00 00 C4 08 00 03 00 00"))
put("tlv", "resource-instance", h("41 01 05"))

# ---- SenML JSON (RFC 8428, Core 1.1 §7.4.4) ----------------------------------------------
put("senml_json", "device", '[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},'
    '{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"9","v":100},{"n":"13","v":1367491215},{"n":"16","vs":"U"}]')
put("senml_json", "types", '[{"bn":"/3/0/","bt":1.5e9,"n":"3","v":21.5,"t":-5},{"n":"4","vb":true},'
    '{"n":"5","vd":"AQIDBAU"},{"n":"7","vlo":"3:0"},{"n":"2","v":18446744073709551615}]')
put("senml_json", "composite-read", '[{"n":"/3/0/9"},{"n":"/1/0/1"}]')
put("senml_json", "object", '[{"bn":"/3/","n":"0/9","v":100},{"n":"1/9","v":50}]')

# ---- SenML CBOR (RFC 8428 §6) ------------------------------------------------------------
def cbor(v):
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for add, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
            if n < 1 << (8 * struct.calcsize(fmt)):
                return bytes([major << 5 | add]) + struct.pack(fmt, n)
        raise ValueError(n)

    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)


BN, BT, N, V, VS, VB, VD, T = -2, -3, 0, 2, 3, 4, 8, 6
put("senml_cbor", "device", cbor([{BN: "/3/0/", N: "0", VS: "Open Mobile Alliance"}, {N: "6/0", V: 1}, {N: "6/1", V: 5},
                                  {N: "9", V: 100}, {N: "13", V: 1367491215}]))
put("senml_cbor", "types", cbor([{BN: "/3/0/", BT: 1.5e9, N: "3", V: 21.5, T: -5}, {N: "4", VB: True},
                                 {N: "5", VD: b"\x01\x02\x03"}, {N: "7", "vlo": "3:0"}, {N: "2", V: -7}]))
put("senml_cbor", "composite-read", cbor([{N: "/3/0/9"}, {N: "/1/0/1"}]))

# ---- CoRE link format (RFC 6690, Core 1.1 §6.2.1, §5.4.2) ---------------------------------
put("link_format", "register", '</>;rt="oma.lwm2m";ct="60 110 112 11542",</1>;ver=1.1,</1/0>,</3/0>,</9>;ver=1.0,</9/0>,</14/0>')
put("link_format", "discover", '</3/0>;pmin=10;pmax=60,</3/0/1>,</3/0/6>;dim=2,</3/0/7>;dim=2;gt=50;lt=42.2;st=0.5')
put("link_format", "plain", "</1/0>,</3/0>")

# ---- Execute arguments (Core 1.1.1 §6.3.5) -----------------------------------------------
for i, a in enumerate(["", "1", "0='v1',1", "7,0='https://www.omaspecworks.org'", "3=''", "0,1,2,3,4"]):
    put("execargs", f"args-{i}", a)

# ---- manifest.toml -----------------------------------------------------------------------
FULL = '''manifest-version = 1
[package]
name = "counter"
version = "1.2.0"
description = "Counts"
requires = ["wasmdm:device/app@0.1"]

[config]
interval-ms = "200"

[[component]]
id = "counter"
version = "1.2.0"
file = "counter.wasm"
sha256 = "%s"
world = "wasmdm:device/app"
[component.sandbox]
memory = "64MiB"
env = { KEY = "value" }
args = ["--flag"]
data-dir = true
data-quota = "16MiB"
readonly = [{ source = "assets", guest = "/assets" }]
network = { allow = ["127.0.0.1:8080", "10.0.0.0/8:*"] }
restart = { policy = "on-failure", max-retries = 5, backoff-ms = 1000 }
log-cap = "64KiB"
stop-grace-ms = 2000

[[file]]
path = "assets/index.html"
sha256 = "%s"
''' % ("ab" * 32, "cd" * 32)
MINIMAL = '''manifest-version = 1
[package]
name = "hello"
version = "0.1.0"
[[component]]
id = "hello"
file = "hello.wasm"
sha256 = "%s"
world = "wasi:cli/command"
''' % ("01" * 32)
put("manifest", "full", FULL)
put("manifest", "minimal", MINIMAL)
put("manifest", "future-version", "manifest-version = 2\n[package]\nname = \"x\"\n")

# ---- package archives --------------------------------------------------------------------
APP = b"\x00asm\x0d\x00\x01\x00pretend component"
PAGE = b"<h1>hi</h1>"
LONG = "assets/" + "d" * 120 + "/page.html"


def package(fmt, paths):
    manifest = '''manifest-version = 1
[package]
name = "demo"
version = "1.0.0"
[[component]]
id = "app"
file = "app.wasm"
sha256 = "%s"
world = "wasmdm:device/app"
''' % hashlib.sha256(APP).hexdigest()
    for p in paths:
        manifest += '[[file]]\npath = "%s"\nsha256 = "%s"\n' % (p, hashlib.sha256(PAGE).hexdigest())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in [("manifest.toml", manifest.encode()), ("app.wasm", APP)] + [(p, PAGE) for p in paths]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    # tarfile pads to a 10 KiB record; keep just the two end-of-archive blocks.
    data = buf.getvalue().rstrip(b"\0")
    return data + b"\0" * (-len(data) % 512 + 1024)


put("archive", "plain-ustar.tar", package(tarfile.USTAR_FORMAT, ["assets/index.html"]))
put("archive", "gnu-longname.tar", package(tarfile.GNU_FORMAT, [LONG]))
put("archive", "pax-path.tar", package(tarfile.PAX_FORMAT, [LONG]))
put("archive", "gzip.wdm", gzip.compress(package(tarfile.GNU_FORMAT, ["assets/index.html"]), mtime=0))
