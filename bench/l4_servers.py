"""The backends of the L4 benchmark that nginx cannot be: a bulk TCP source and a UDP echo.

Run as its own process (``python -m bench.l4_servers bulk --port P`` or
``udp-echo --port U``); bench/l4.py starts it through the Supervisor, pinned
to the load CPU. The new-connection case needs no server here: nginx's
``return 200`` with ``Connection: close`` is the backend there.

Invariants this module keeps:

- Standard library only, and no per-byte Python work: the bulk source hands
  the kernel one preallocated 1 MiB buffer per ``send`` and the echo answers
  each datagram with the bytes it received, so per syscall the Python overhead
  (about a microsecond) is small beside the kernel's copy, and the backend is
  not what a proxied run measures (the "direct" row shows its ceiling).
- Bulk protocol: the client speaks first (any bytes, one read's worth), then
  the server streams until the client goes away. Client-first so that a proxy
  that peeks at the first bytes (SNI routing) forwards the connection; the
  request bytes are never sent on, so they stay out of the figure.
- Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import threading

LOOPBACK = "127.0.0.1"
CHUNK = 1 << 20
# net.core.rmem_max/wmem_max cap what is granted; the request is only a ceiling.
UDP_BUFFER = 4 << 20


def serve_bulk(port: int, chunk: int = CHUNK) -> None:
    """Accept forever; every connection gets its own thread streaming ``chunk``-sized sends."""
    payload = memoryview(bytes(chunk))
    listener = socket.create_server((LOOPBACK, port), backlog=1024)

    def stream(conn: socket.socket) -> None:
        # sendall drops the GIL while it blocks in the kernel, so threads cost
        # nothing here while the socket buffer is full.
        with conn:
            try:
                if not conn.recv(65536):
                    return
                while True:
                    conn.sendall(payload)
            except OSError:
                return  # the client closed: EPIPE or ECONNRESET ends the stream

    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=stream, args=(conn,), daemon=True).start()


def serve_udp_echo(port: int) -> None:
    """Send every datagram back to its sender, unchanged, draining the socket per wakeup."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
    sock.bind((LOOPBACK, port))
    sock.setblocking(False)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        poller.poll()
        while True:
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier reply; the socket stays usable
            # try/except, not contextlib.suppress: this runs once per datagram.
            try:  # noqa: SIM105
                sendto(data, addr)
            except (BlockingIOError, ConnectionRefusedError):
                pass  # a full buffer or a gone peer loses this one reply, as UDP may


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("kind", choices=("bulk", "udp-echo"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=CHUNK, help="bytes per send (bulk)")
    args = ap.parse_args(argv)
    if args.kind == "bulk":
        serve_bulk(args.port, args.chunk)
    else:
        serve_udp_echo(args.port)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
