#!/usr/bin/env python3
"""Memory under idle keep-alive connections: RSS of a proxy idle, and with N idle connections.

Opens N keep-alive connections to 127.0.0.1:PORT, sends one `GET /` on each and reads the whole
response, then leaves them all open and idle. Prints the RSS (VmRSS from /proc, summed over the
process and its children) of PID before the first connection and after HOLD seconds with all N
open, and how many connections the server still kept open. Python 3 standard library only.

    benches/idle_conns.py --port 18413 --pid 12345 -n 10000
    benches/idle_conns.py --port 18413 --pid 12345 --markdown levee   # one markdown table row
    benches/idle_conns.py --port 18413 --pid 12345 --tsv              # rss_idle_kib rss_with_kib open

The server needs an idle timeout longer than the run (levee header_read_timeout, nginx
keepalive_timeout, HAProxy timeout http-keep-alive / client) and room for N connections.
"""
import argparse
import os
import resource
import select
import socket
import sys
import time


def tree(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        pids.extend(tree(k))
    return pids


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def read_response(sock, buf=b""):
    """Read one HTTP/1.1 response with a Content-Length body; return (status, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ConnectionError("chunked responses are not handled; serve a Content-Length body")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        rest += chunk
    return status, rest[length:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's PID (its children count too)")
    ap.add_argument("-n", type=int, default=10000, help="idle connections (default 10000)")
    ap.add_argument("--path", default="/")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds idle before measuring (default 3)")
    ap.add_argument("--batch", type=int, default=100, help="connections opened per batch (default 100)")
    ap.add_argument("--markdown", metavar="NAME", help="print one markdown table row for NAME")
    ap.add_argument("--tsv", action="store_true", help="print: rss_idle_kib rss_with_kib still_open")
    args = ap.parse_args()

    want = args.n + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        sys.exit(f"need {want} file descriptors, the limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")

    time.sleep(0.5)
    idle = rss_kib(args.pid)
    if idle == 0:
        sys.exit(f"no process {args.pid}")

    req = (f"GET {args.path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: idle_conns\r\n\r\n").encode()
    socks = []
    t0 = time.monotonic()
    while len(socks) < args.n:
        # a batch: connect all, send on all, then read all responses, so the proxy sees a little
        # concurrency (and its upstream pool stays small) without one round trip per connection
        batch = []
        for _ in range(min(args.batch, args.n - len(socks))):
            s = socket.create_connection((args.host, args.port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            batch.append(s)
        for s in batch:
            s.sendall(req)
        for s in batch:
            status, extra = read_response(s)
            if status != 200:
                sys.exit(f"got status {status} on connection {len(socks)}")
            if extra:
                sys.exit("unexpected bytes after the response")
            socks.append(s)
    opened = time.monotonic() - t0

    time.sleep(args.hold)
    loaded = rss_kib(args.pid)
    # a connection the server closed is readable (EOF); an idle open one is not
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    closed = {fd for fd, _ in poller.poll(0)}
    still_open = len(socks) - len(closed)
    per_conn = (loaded - idle) / max(args.n, 1)
    if args.tsv:
        print(f"{idle}\t{loaded}\t{still_open}")
    elif args.markdown:
        print(f"| {args.markdown} | {idle / 1024:.1f} | {loaded / 1024:.1f} | {per_conn:.1f} | {still_open} |")
    else:
        print(f"opened {args.n} connections in {opened:.1f}s; {still_open} still open after {args.hold}s idle")
        print(f"rss idle {idle / 1024:.1f} MiB, with {args.n} idle connections {loaded / 1024:.1f} MiB "
              f"({per_conn:.1f} KiB per connection)")
    for s in socks:
        s.close()
    return 0 if still_open == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
