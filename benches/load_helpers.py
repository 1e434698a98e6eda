#!/usr/bin/env python3
"""Small helpers for benches/load.sh (standard library only).

Subcommands:
  free-port                       print a free TCP port on 127.0.0.1
  otlp-sink PORT                  accept OTLP/HTTP exports on 127.0.0.1:PORT and discard
                                  them (200, keep-alive): the collector of TELEMETRY=1
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
  tls MODE PROCS SECS URL CAFILE PROXY PIDS
                                  HTTPS load from PROCS processes for SECS seconds against
                                  URL (https://host:port/path), verified against CAFILE;
                                  through PROXY with CONNECT if not empty (the same client
                                  code either way, so the two sides are comparable).
                                  MODE keepalive: one TLS connection per process, one
                                  request in flight, reused. MODE handshake: a new TCP (+
                                  CONNECT) + full TLS handshake + one request per
                                  connection, then close. PIDS: comma-separated process ids
                                  whose CPU time over the window is reported per request.
                                  Prints "RESULT per_s errors client_us_per_op
                                  pid1_us_per_op pid2_us_per_op ..."
"""

import http.server
import multiprocessing
import os
import socket
import socketserver
import ssl
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


class OtlpSinkHandler(http.server.BaseHTTPRequestHandler):
    """Reads each export's body and answers 200 with an empty body (what a collector
    answers to a full success), keeping the connection."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def otlp_sink(port):
    with ThreadingServer(("127.0.0.1", port), OtlpSinkHandler) as srv:
        srv.serve_forever()


def stream_origin(port):
    with ThreadingServer(("127.0.0.1", port), StreamHandler) as srv:
        srv.serve_forever()


# A Proxy-Authorization header value for every request to the gateway (absolute-form
# requests and CONNECT), from the environment: benches/load.sh sets it for the governed
# profile, where the gateway authenticates every agent.
PROXY_AUTH = os.environ.get("PROXY_AUTH", "")


def _proxy_auth_line():
    return f"Proxy-Authorization: {PROXY_AUTH}\r\n" if PROXY_AUTH else ""


def _request_bytes(url, absolute):
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = url if absolute else path
    auth = _proxy_auth_line() if absolute else ""
    return (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}"
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


def _proc_cpu_s(pid):
    """utime + stime of a process (children excluded), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tls_open(host, port, ctx, proxy):
    """A TLS connection to host:port, directly or through a CONNECT tunnel."""
    if proxy:
        s = socket.create_connection(_addr(proxy))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(
            f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{_proxy_auth_line()}\r\n".encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("proxy closed during CONNECT")
            buf += chunk
        if buf.split(b" ", 2)[1] != b"200":
            raise ConnectionError(f"CONNECT refused: {buf[:80]!r}")
    else:
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s, server_hostname=host)


def _tls_worker(mode, url, cafile, proxy, start, stop, out):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    ctx = ssl.create_default_context(cafile=cafile)
    req = _request_bytes(url, absolute=False)
    done = errors = 0
    conn = None
    try:
        if mode == "keepalive":
            conn = _tls_open(host, port, ctx, proxy)
            conn.sendall(req)  # warm the connection (and the gateway's upstream) once
            _read_response(conn)
        while time.time() < start:
            time.sleep(0.001)
        cpu0 = sum(os.times()[:2])
        while time.time() < stop:
            try:
                if mode == "handshake":
                    conn = _tls_open(host, port, ctx, proxy)
                conn.sendall(req)
                if _read_response(conn) == b"200":
                    done += 1
                else:
                    errors += 1
                if mode == "handshake":
                    conn.close()
                    conn = None
            except (OSError, ConnectionError, IndexError, ValueError):
                errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                if mode == "keepalive":
                    conn = _tls_open(host, port, ctx, proxy)
        cpu = sum(os.times()[:2]) - cpu0
    finally:
        if conn is not None:
            conn.close()
    out.put((done, errors, cpu))


def tls_load(mode, procs, secs, url, cafile, proxy, pids):
    out = multiprocessing.Queue()
    start = time.time() + 1.0 + 0.05 * procs  # time for every worker to connect
    stop = start + secs
    workers = [
        multiprocessing.Process(
            target=_tls_worker, args=(mode, url, cafile, proxy, start, stop, out)
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    while time.time() < start:
        time.sleep(0.001)
    cpu0 = [_proc_cpu_s(p) for p in pids]
    while time.time() < stop:
        time.sleep(0.01)
    cpu1 = [_proc_cpu_s(p) for p in pids]
    results = [out.get(timeout=secs + 30) for _ in workers]
    for w in workers:
        w.join()
    done = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    per_op = lambda s: int(s * 1e6 / done) if done else 0  # noqa: E731
    fields = [f"{done / secs:.1f}", str(errors), str(per_op(sum(r[2] for r in results)))]
    fields += [str(per_op(b - a)) for a, b in zip(cpu0, cpu1)]
    print("RESULT " + " ".join(fields), flush=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "free-port":
        free_port()
    elif cmd == "otlp-sink":
        otlp_sink(int(argv[2]))
    elif cmd == "stream-origin":
        stream_origin(int(argv[2]))
    elif cmd == "ttfb":
        proxy = argv[4] if len(argv) > 4 and argv[4] else None
        ttfb(int(argv[2]), argv[3], proxy, keepalive=len(argv) > 5 and argv[5] == "keepalive")
    elif cmd == "idle-conns":
        idle_conns(argv[2], argv[3], int(argv[4]))
    elif cmd == "tls":
        pids = [int(p) for p in argv[8].split(",") if p] if len(argv) > 8 else []
        tls_load(argv[2], int(argv[3]), float(argv[4]), argv[5], argv[6], argv[7] or None, pids)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
