"""An HTTP proxy for fault and latency tests: sits between arrfs and a test server.

    proxy.py UPSTREAM_PORT [--port N] [--delay-ms MS]

Forwards every request to 127.0.0.1:UPSTREAM_PORT unchanged (Host header included, so S3
signatures still verify), after adding latency, and counts requests by method and the body
bytes of GET answers. Prints {"port": N} on stdout, serves until stdin closes.

Controlled over HTTP on its own port (paths no S3 bucket or test file can have):
    GET /__proxy__/stats           -> {"GET": n, "HEAD": n, ..., "get_bytes": n, "ranges": [...]}
    GET /__proxy__/reset           -> zeroes the counters
    GET /__proxy__/set?delay_ms=20 -> latency added before each forwarded request
    GET /__proxy__/set?mode=M      -> ok | stall (hold requests without answering until the
                                      mode changes, 120 s at most) | drop (close the
                                      connection unanswered) | error (answer 503)
    GET /__proxy__/set?stall_from_head=N -> the Nth HEAD from now on (and every request after
                                      it) stalls: lets one client's requests through and
                                      holds the next client's (0: off)
    GET /__proxy__/set?cut_after=N -> the next GET answer longer than N bytes is cut after N
                                      bytes of its body (the connection closed mid-body, as a
                                      dropped connection would), once (0: off)
Control requests are not counted.
"""

import argparse
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from serve import serve

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
STALL_AT_MOST_S = 120


class State:
    lock = threading.Lock()
    upstream = 0
    delay_ms = 0
    mode = "ok"
    stall_from_head = 0
    heads_to_stall = 0
    cut_after = 0
    cuts = 0
    counts = {}
    get_bytes = 0
    ranges = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm the body waits for
    # the client's delayed ACK (40 ms a response).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any()

    def do_HEAD(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def answer_json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def control(self, url):
        with State.lock:
            if url.path == "/__proxy__/stats":
                stats = dict(State.counts, get_bytes=State.get_bytes, ranges=list(State.ranges),
                             cuts=State.cuts)
                return self.answer_json(stats)
            if url.path == "/__proxy__/reset":
                State.counts, State.get_bytes, State.ranges = {}, 0, []
                return self.answer_json({"ok": True})
            if url.path == "/__proxy__/set":
                query = parse_qs(url.query)
                if "delay_ms" in query:
                    State.delay_ms = int(query["delay_ms"][0])
                if "mode" in query:
                    State.mode = query["mode"][0]
                if "cut_after" in query:
                    State.cut_after = int(query["cut_after"][0])
                if "stall_from_head" in query:
                    State.stall_from_head = int(query["stall_from_head"][0])
                    State.heads_to_stall = State.stall_from_head
                return self.answer_json({"ok": True})
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def handle_any(self):
        url = urlsplit(self.path)
        if url.path.startswith("/__proxy__/"):
            return self.control(url)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with State.lock:
            State.counts[self.command] = State.counts.get(self.command, 0) + 1
            if self.command == "GET" and self.headers.get("Range"):
                State.ranges.append(self.headers["Range"])
            if self.command == "HEAD" and State.stall_from_head:
                State.heads_to_stall -= 1
                if State.heads_to_stall == 0:
                    State.mode, State.stall_from_head = "stall", 0
            delay, mode = State.delay_ms, State.mode
        if delay:
            time.sleep(delay / 1000)
        if mode == "stall":
            until = time.monotonic() + STALL_AT_MOST_S
            while State.mode == "stall" and time.monotonic() < until:
                time.sleep(0.05)
            self.close_connection = True
            return
        if mode == "drop":
            self.close_connection = True
            return
        if mode == "error":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.forward(body)

    def forward(self, body):
        upstream = http.client.HTTPConnection("127.0.0.1", State.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        except OSError:
            self.close_connection = True
            return
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            # send_response wrote its own Server and Date already.
            if key.lower() not in HOP_BY_HOP | {"content-length", "server", "date"}:
                self.send_header(key, value)
        if self.command == "HEAD":
            length = answer.getheader("Content-Length") or "0"
        else:
            length = str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        with State.lock:
            cut = State.cut_after if self.command == "GET" and 0 < State.cut_after < len(data) else 0
            if cut:
                State.cut_after, State.cuts = 0, State.cuts + 1
        if cut:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            with State.lock:
                State.get_bytes += cut
            return
        if self.command != "HEAD":
            self.wfile.write(data)
            if self.command == "GET":
                with State.lock:
                    State.get_bytes += len(data)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream", type=int)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    State.upstream = args.upstream
    State.delay_ms = args.delay_ms
    serve(Handler, args.port)

if __name__ == "__main__":
    main()
