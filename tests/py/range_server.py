"""A plain HTTP server with Range support, serving one directory, for https?:// sources.

    range_server.py DIR [--port N]

GET and HEAD with `Range: bytes=A-B` (206 + Content-Range), `ETag` (size and mtime) and
`Last-Modified`, and `If-Match` (412 when the ETag differs), as nginx and object stores
answer. Binds 127.0.0.1 (port 0: a free port), prints {"port": N} on stdout, serves until
stdin closes or it is killed. Python's http.server has no Range support, hence this.
"""

import argparse
import email.utils
import os
import re
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from serve import serve


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK (40 ms a response).
    disable_nagle_algorithm = True
    root = "."

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        self.serve(body=True)

    def target(self):
        path = unquote(urlsplit(self.path).path)
        full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if not full.startswith(os.path.realpath(self.root) + os.sep):
            return None
        return full if os.path.isfile(full) else None

    def fail(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def serve(self, body):
        path = self.target()
        if path is None:
            return self.fail(404)
        st = os.stat(path)
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() not in (etag, "*"):
            return self.fail(412)
        start, end = 0, st.st_size
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                return self.fail(416)
            if m.group(1) == "":
                start, end = max(0, st.st_size - int(m.group(2))), st.st_size
            else:
                start = int(m.group(1))
                end = min(st.st_size, int(m.group(2)) + 1) if m.group(2) else st.st_size
            if start >= st.st_size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{st.st_size}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                piece = f.read(min(left, 1 << 20))
                if not piece:
                    break
                self.wfile.write(piece)
                left -= len(piece)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.root = args.dir
    serve(Handler, args.port)

if __name__ == "__main__":
    main()
