"""The life cycle every harness server shares: bind 127.0.0.1 (port 0: a free one), print
{"port": N} on stdout, serve on threads until stdin closes (the test that started it ended)."""

import json
import sys
import threading
from http.server import ThreadingHTTPServer


def serve(handler, port):
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    # The default listen backlog of 5 overflows when a client opens many connections at
    # once: the kernel drops the SYN and the client retries it only after 1 s.
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()
