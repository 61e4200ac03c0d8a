#!/usr/bin/env python3
"""Renders target/bench-dtls/* as the DTLS section of BENCHMARKS.md.

Usage: dtls_report.py RESULTS_DIR BENCHMARKS.md

Inputs (each written by scripts/bench-dtls.sh, each starting with the command
that made it): handshake.md, transfer.json, register-{dtls,plain}-N.md. A part
whose input is missing keeps the text it had in the file. Only the text between
`<!-- dtls:begin -->` and `<!-- dtls:end -->` is replaced; without the markers
the section goes just before `<!-- lwm2m:end -->` (so scripts/bench.sh, which
regenerates the file, carries it over with the LwM2M section), else at the end.
"""

import json
import os
import platform
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- dtls:begin -->", "<!-- dtls:end -->"
LWM2M_END = "<!-- lwm2m:end -->"
PART = re.compile(r"<!-- dtls-part:(\w+) -->\n(.*?)<!-- dtls-part-end -->\n", re.S)


def machine():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def stamp(path):
    import datetime
    t = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


HANDSHAKE_INTRO = """Each row is a full DTLS 1.2 handshake (no resumption) with a fresh client
association against one long-lived server. wasmdm: `DtlsClient` against
`DtlsServer` (host/proto/src/dtls, over rtc-dtls), the server holding both a PSK
table and a P-256 certificate as `wasmdm server --dtls-cert` does; timed from
the client's first `send` (which starts the handshake: ClientHello,
HelloVerifyRequest, ClientHello with cookie, ..., the server's Finished) until
the client holds the server's Finished; client configuration built before the
clock starts. In memory = one thread drives both sides with no sockets, so the
figure is the CPU both sides spend; UDP = server on its own thread with its
socket, driven as host/server/src/transport.rs drives it, client on the bench
thread with a new socket per handshake. ECDHE-ECDSA is mutual (both sides send
and verify a P-256 certificate from one rcgen CA; the client checks the
server's name). libcoap 4.3.1 (Debian libcoap3-bin) with OpenSSL 3: wall time
of a `coap-client-openssl -m get` process against `coap-server-openssl`, NoSec
and over DTLS; libcoap sets its own cipher list over OPENSSL_CONF, so
tests/bench/force_ciphers.c (LD_PRELOAD) hands it `PSK-AES128-CCM8:@SECLEVEL=0`
/ `ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0` (CCM_8 needs security level 0 in
OpenSSL 3); the suite it then negotiated is read from `-v 9` and shown. Its
handshake cost is estimated as DTLS run minus NoSec run of the same binary
(same process start and libraries; the difference also holds OpenSSL's
SSL_CTX set-up, certificate loading, the session ticket the OpenSSL server
adds, one GET's record protection and the close_notify). `-v` timestamps have
millisecond resolution, too coarse here. All rows run interleaved, one of each
per round."""

TRANSFER_INTRO = """Over DTLS-PSK, TLS_PSK_WITH_AES_128_CCM_8, 1024-byte blocks, loopback. The
package is the counter package plus a random [[file]] asset (as in "Package
delivery" above), valid, so each round ends in DELIVERED. A device over DTLS takes
requests only from its LwM2M server through the session, so the peer is
`wasmdm server --coaps` with the device's PSK stored through
`PUT /api/security/bench-dev`: a push is the server's Block1 Write of /9/x/2 in
an `install` campaign with push delivery; a server pull is an `install`
campaign pulling `coaps://<server>/fw/<sha256>/<capability>` (Block2 over the
same DTLS session); a pull from libcoap is a Package URI
`coaps://127.0.0.1:P/file` written through the DM API, fetched from
`coap-server-openssl -d 20 -k KEY` with the account's PSK. Device figures come
from the device log's own timestamps: from the line of the last answer
before the first block (push, see below) or of the answered URI Write (pull)
to the `update state -> 3` line, so they hold reception, decryption, the package file written and synced,
verification (unpack, sha256) and the durable DELIVERED state, but not the
session's handshake (already up). libcoap's are the wall time of a
`coap-client-openssl -b 1024` process (PUT with `-f`, GET with `-o`) against
`coap-server-openssl -d 20` (in memory), which includes process start and a
handshake: the 'libcoap fixed cost' row (a DTLS GET of `/`) measures those, and
the last column compares with libcoap's time less that cost. Campaign rows:
POST of the campaign to its report saying finished (Read /9, Observe, the
delivery, Install; an `uninstall` campaign resets between rounds). The 'plain
CoAP' rows are the same campaigns against a second server and device pair
over plain CoAP (`--allow-nosec`, `coap://`), measured the same way: their gap
to the DTLS rows is what DTLS costs the server's Block1 sender and Block2
server, their gap to libcoap what the rest does. Every row runs once per
round, all rows in each round (libcoap PUT, GET and fixed cost; pull from
libcoap; push and pull over DTLS and over plain CoAP), so load hits all alike.
For a push the device logs the blocks of a Block1 transfer only at debug
level, so its window starts at the device's answer to the campaign's last
request before the first block (the Observe of /9/x/12), which the server
follows with that block at once."""

REGISTER_INTRO = """One `wasmdm server` (release build, fresh data directory, default DTLS limits),
and in one bench process on one thread (tokio current_thread) N simulated
devices, each its own UDP socket and `DtlsClient` (PSK identity = endpoint
name, a key of its own provisioned first through `PUT /api/security/{ep}`),
sending a CON Register `POST /rd?ep=NAME&lt=300&lwm2m=1.1&b=U` with the payload
of tests/bench/lwm2m_scale.py, at most 50 in flight (as §4). Timed from the
first ClientHello to the 2.01 Created. The sessions stay open. Server RSS =
VmRSS from /proc before the first ClientHello (server idle, PSKs stored) and 1 s
after the last 2.01; per session = the difference / N. The plain-CoAP rows are
the same devices and server with `--allow-nosec`, registering without DTLS,
run interleaved with the DTLS rounds on fresh servers: the difference between
the two is the cost of the DTLS session. Each device binds its own loopback
address (127.1.x.y), as devices in the field have their own; the last row has
them all on 127.0.0.1 (devices behind one NAT or gateway), where the server's
cap of 8 half-open handshakes per source IP (`ServerLimits::max_half_open_per_ip`)
drops the ClientHellos beyond 8 and those clients retransmit after their 1 s
and 2 s flight timers."""


def handshake_part(src):
    p = src / "handshake.md"
    if not p.exists():
        return None
    return ["### 1. Handshake latency", "", f"Run {stamp(p)}.", "", HANDSHAKE_INTRO, "",
            p.read_text().strip(), ""]


def secs(s):
    return "—" if not s else f"{s['p50']:.3f}"


def transfer_part(src):
    p = src / "transfer.json"
    if not p.exists():
        return None
    j = json.loads(p.read_text())
    t = j.get("transfer_dtls", {})
    load = ""
    if j.get("loadavg_start") is not None:
        load = (f"; load average (1 min) {j['loadavg_start']:.2f} at the start, "
                f"{j.get('loadavg_end', 0):.2f} at the end, on {j.get('cpus', '?')} cores")
    rows = ["| size | path | p50 (s) | max (s) | MiB/s at p50 | vs libcoap (p50) | vs libcoap less its fixed cost |",
            "|---|---|---|---|---|---|---|"]
    for label, r in t.items():
        if not isinstance(r, dict) or "bytes" not in r:
            continue
        mib = r["bytes"] / (1 << 20)
        fixed = (r.get("libcoap_fixed_s") or {}).get("p50", 0)
        put = (r.get("libcoap_put_s") or {}).get("p50")
        get = (r.get("libcoap_get_s") or {}).get("p50")
        lines = [
            ("libcoap `coap-client-openssl -m put` -> `coap-server-openssl` (process)", "libcoap_put_s", None),
            ("libcoap `coap-client-openssl -m get` <- `coap-server-openssl` (process)", "libcoap_get_s", None),
            ("libcoap fixed cost: DTLS GET of `/` (process start + handshake)", "libcoap_fixed_s", None),
            ("device: Block1 push from `wasmdm server` (Observe /9/x/12 answered, first block next -> Update State 3)",
             "push_block1_delivered_s", put),
            ("device: CoAP pull from `coap-server-openssl` (URI Write -> Update State 3)",
             "pull_coap_delivered_s", get),
            ("device: CoAP pull from `wasmdm server` (URI Write -> Update State 3)",
             "pull_server_delivered_s", get),
            ("same, plain CoAP: Block1 push from `wasmdm server --allow-nosec`",
             "plain_push_block1_delivered_s", put),
            ("same, plain CoAP: CoAP pull from `wasmdm server --allow-nosec`",
             "plain_pull_server_delivered_s", get),
            ("push `install` campaign, POST -> finished (incl. Install)", "push_block1_campaign_s", None),
            ("pull `install` campaign, POST -> finished (incl. Install)", "pull_server_campaign_s", None),
        ]
        for name, key, base in lines:
            s = r.get(key)
            if not s:
                continue
            ratio = f"{s['p50'] / base:.2f}x" if base else ""
            net = f"{s['p50'] / (base - fixed):.2f}x" if base and base > fixed else ""
            rate = f"{mib / s['p50']:.1f}" if key != "libcoap_fixed_s" else ""
            rows.append(f"| {label} ({r['bytes']} B) | {name} | {s['p50']:.3f} | {s['max']:.3f} | "
                        f"{rate} | {ratio} | {net} |")
        for mode in ("libcoap", "push_block1", "pull_coap", "pull_server", "plain_push_block1",
                     "plain_pull_server"):
            if r.get(mode + "_error"):
                rows.append(f"| {label} | {mode} | FAILED: {r[mode + '_error']} | | | | |")
    return ["### 2. Transfers over DTLS-PSK, 1024-byte blocks (target: within 1.5x of libcoap)", "",
            f"Command: `{j.get('invocation') or 'python3 tests/bench/lwm2m_bench.py transfer-dtls'}`", "",
            f"Run {j.get('date', '?')}{load}. Suites: device <-> server "
            f"{t.get('device_cipher_suite', '?')} (0xC0A8 = TLS_PSK_WITH_AES_128_CCM_8), "
            f"libcoap {t.get('libcoap_cipher', '?')}; {j.get('reps', '?')} rounds per row.", "",
            TRANSFER_INTRO, "", "\n".join(rows), ""]


def register_part(src):
    files = sorted(src.glob("register-*.md"))
    if not files:
        return None
    figures = {"dtls": [], "plain": [], "dtls-1ip": []}
    for f in files:
        text = f.read_text()
        mode = ("plain" if "-plain-" in f.name else "dtls-1ip" if "-1ip-" in f.name
                else "dtls")
        reg = re.search(r"^REG_PER_S (\S+)", text, re.M)
        rss = re.search(r"^RSS_PER_DEVICE_KIB (\S+)", text, re.M)
        figures[mode].append((reg.group(1) if reg else "?", rss.group(1) if rss else "?"))
    out = ["### 3. Simulated devices registering over DTLS-PSK with one `wasmdm server`", "",
           f"Run {stamp(files[-1])}.", "", REGISTER_INTRO, "",
           "| mode | registrations/s per round | server RSS per registered device (KiB) per round |",
           "|---|---|---|"]
    for mode, name in (("dtls", "DTLS-PSK (session kept), one source address per device"),
                       ("plain", "plain CoAP, NoSec, one source address per device"),
                       ("dtls-1ip", "DTLS-PSK, all devices from 127.0.0.1")):
        if figures[mode]:
            out.append(f"| {name} | {' / '.join(r for r, _ in figures[mode])} | "
                       f"{' / '.join(k for _, k in figures[mode])} |")
    out.append("")
    for f in files:
        body = "\n".join(line for line in f.read_text().splitlines()
                         if not line.startswith(("REG_PER_S", "RSS_PER_DEVICE_KIB")))
        out += [f"#### {f.stem}", "", body.strip(), ""]
    return out


NOTES = """### Notes

- Not run: the 1000-device upgrade campaigns of §4 over DTLS. Their simulated
  devices (tests/bench/lwm2m_scale.py) are Python with the SwMgmt state machine
  written out, and the Python here has no DTLS (aiocoap's needs the DTLSSocket
  binding of tinydtls, not installed); over DTLS they would have to be rebuilt
  around `DtlsClient` in Rust, which §3's devices do for Register only.
- Sources: §3's devices and the UDP handshake rows bind an address each
  (127.x.y.z). The server refuses for 30 s (`ServerLimits::replace_after_idle`)
  a ClientHello from the address of a live session, and a new socket's
  ephemeral port sometimes is one a finished round still holds a session for:
  such a client gets no answer, retransmits its ClientHello every second and
  gives up after about 9 s.
- Transfers: the max column runs up to twice the p50 (other work on the 2
  cores). Before the rows were interleaved (each row's rounds back to back),
  three runs of the same build put the 10 MiB DTLS push at 1.25x, 1.09x and
  2.43x of libcoap's PUT and the pull from `wasmdm server` at 0.74x, 1.00x and
  2.50x of its GET, so read one table's ratios, not single rows across runs.
- The 'all from 127.0.0.1' row of §3 shows the cap of 8 half-open handshakes
  per source address: with 50 devices starting at once behind one address,
  the ClientHellos past 8 are dropped and wait for the client's retransmission.
"""


def git_rev():
    import subprocess
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" plus uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    text = dst.read_text() if dst.exists() else ""
    old = {}
    if BEGIN in text and END in text:
        for m in PART.finditer(text.split(BEGIN, 1)[1].split(END, 1)[0]):
            old[m.group(1)] = m.group(2)
    out = [BEGIN, "## DTLS (coaps, DTLS 1.2)", "",
           f"Made by `scripts/bench-dtls.sh` (parts: `handshake`, `transfer`, `register`), "
           f"release builds (`cargo bench` profile; `target/release/wasmdm`), loopback, on "
           f"{machine()}, tree at {git_rev()} when the report was written, shared with other "
           "work while measuring: read the figures as upper bounds and compare rows of one "
           "table (they ran interleaved or back to back).", ""]
    for name, fn in (("handshake", handshake_part), ("transfer", transfer_part),
                     ("register", register_part)):
        part = fn(src)
        body = "\n".join(part) + "\n" if part is not None else old.get(name)
        if body:
            out.append(f"<!-- dtls-part:{name} -->\n{body}<!-- dtls-part-end -->")
    out += [NOTES, END]
    section = "\n".join(out)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    elif LWM2M_END in text:
        head, tail = text.rsplit(LWM2M_END, 1)
        text = head.rstrip("\n") + "\n\n" + section + "\n\n" + LWM2M_END + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section + "\n"
    dst.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
