#!/usr/bin/env python3
"""Small helpers for benches/load.sh (standard library only).

Subcommands:
  free-port                       print a free TCP port on 127.0.0.1
  stream-origin PORT              serve an SSE-like chunked stream on 127.0.0.1:PORT:
                                  headers + the first event are written at once, a second
                                  event follows after 20 ms, then the stream ends
  ttfb N URL [PROXY [keepalive]]  fetch URL N times (through PROXY if not empty; a fresh
                                  connection each time, or one reused keep-alive connection)
                                  and print the time from sending the request (and
                                  connecting, if fresh) to the first response byte in
                                  microseconds, one per line
  idle-conns PROXY URL N          open N keep-alive connections to PROXY, send one
                                  absolute-form request for URL on each and read the whole
                                  response, print "READY <n>" and hold them open until stdin
                                  closes or the process is terminated
"""

import socket
import socketserver
import sys
import time
from urllib.parse import urlsplit


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


class StreamHandler(socketserver.BaseRequestHandler):
    """An SSE-like origin: the first event is sent with the headers, immediately."""

    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            _, buf = buf.split(b"\r\n\r\n", 1)
            first = b"data: first\n\n"
            second = b"data: second\n\n"
            sock.sendall(
                b"HTTP/1.1 200 OK\r\n"
                b"Content-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(first), first)
            )
            time.sleep(0.02)
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))


class ThreadingServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def stream_origin(port):
    with ThreadingServer(("127.0.0.1", port), StreamHandler) as srv:
        srv.serve_forever()


def _request_bytes(url, absolute):
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = url if absolute else path
    return (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: portcullis-load\r\nAccept: */*\r\n\r\n"
    ).encode()


def _addr(hostport):
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _drain_stream(s, data):
    """Reads the rest of a chunked response so the stream completes normally."""
    s.settimeout(2)
    try:
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                return False
            data += chunk
    except socket.timeout:
        return False
    return True


def ttfb(n, url, proxy=None, keepalive=False):
    parts = urlsplit(url)
    dest = _addr(proxy) if proxy else (parts.hostname, parts.port or 80)
    req = _request_bytes(url, absolute=proxy is not None)
    s = None
    for _ in range(n):
        t0 = time.perf_counter()
        if s is None:
            s = socket.create_connection(dest)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req)
        first = s.recv(1)
        t1 = time.perf_counter()
        if not first:
            print("error: connection closed before the first byte", file=sys.stderr)
            sys.exit(1)
        complete = _drain_stream(s, first)
        if not keepalive or not complete:
            s.close()
            s = None
        print(int((t1 - t0) * 1e6))
    if s is not None:
        s.close()


def _read_response(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return status


def idle_conns(proxy, url, n):
    req = _request_bytes(url, absolute=True)
    dest = _addr(proxy)
    socks = []
    bad = 0
    for _ in range(n):
        s = socket.create_connection(dest)
        s.sendall(req)
        if _read_response(s) != b"200":
            bad += 1
        socks.append(s)
    print(f"READY {len(socks)} non200={bad}", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    for s in socks:
        s.close()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "free-port":
        free_port()
    elif cmd == "stream-origin":
        stream_origin(int(argv[2]))
    elif cmd == "ttfb":
        proxy = argv[4] if len(argv) > 4 and argv[4] else None
        ttfb(int(argv[2]), argv[3], proxy, keepalive=len(argv) > 5 and argv[5] == "keepalive")
    elif cmd == "idle-conns":
        idle_conns(argv[2], argv[3], int(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
