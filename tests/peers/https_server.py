#!/usr/bin/env python3
"""HTTPS file server for the device's pull tests: Python's own ssl and
http.server, an independent TLS peer for rustls.

    https_server.py CERT_CHAIN_PEM KEY_PEM DIR

Serves the files of DIR over HTTPS on 127.0.0.1 (a free port, printed as
"PORT <n>" on stdout once listening) with a strong ETag, and answers
"Range: bytes=N-" with 206 when If-Range is absent or matches that ETag
(RFC 9110 §14.2, §13.1.5): SimpleHTTPRequestHandler does neither. Each
request line is logged to stderr.
"""

import http.server
import os
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def do_GET(self):
        name = os.path.basename(self.path.split("?", 1)[0])
        path = os.path.join(self.root, name)
        if not name or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            body = f.read()
        st = os.stat(path)
        etag = '"%x-%x"' % (st.st_size, st.st_mtime_ns)
        start = 0
        rng = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if rng.startswith("bytes=") and rng.endswith("-") and if_range in (None, etag):
            try:
                start = int(rng[len("bytes="):-1])
            except ValueError:
                start = 0
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(body))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if start > 0:
            self.send_response(206)
            self.send_header(
                "Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body))
            )
        else:
            self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, fmt, *args):
        sys.stderr.write("https_server: " + (fmt % args) + "\n")


def main():
    cert, key, root = sys.argv[1:4]
    Handler.root = root
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # The handshake runs in the handler thread on first read, so a client
    # that rejects the certificate does not stall the accept loop.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
