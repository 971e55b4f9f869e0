"""Test helpers for the socket LB: tagged backends on 127.0.0.1 or ::1 and a cgroup client.

Backends run in the test process (outside the test cgroup, so their own sockets are never
translated) and answer every TCP connection or UDP datagram with their tag. The client is a
subprocess that moves itself into the test cgroup before it opens any socket, then runs
JSON-line commands, so the programs see only its sockets. Everything is stopped by handle/PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

CLIENT = r"""
import errno, json, os, socket, sys, threading
with open(sys.argv[1] + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def tcp_once(addr, port):
    with socket.create_connection((addr, port), timeout=5) as s:
        peer = s.getpeername()
        return s.recv(64).decode(), list(peer[:2])
out({"ready": True})
for line in sys.stdin:
    cmd = json.loads(line); op = cmd["op"]; addr, port = cmd.get("addr"), cmd.get("port")
    if op == "exit":
        break
    if op == "tcp":
        counts, failures, peers = {}, [], set()
        for _ in range(cmd["n"]):
            try:
                tag, peer = tcp_once(addr, port)
                counts[tag] = counts.get(tag, 0) + 1; peers.add(tuple(peer))
            except OSError as e:
                failures.append(errno.errorcode.get(e.errno, repr(e)))
        out({"counts": counts, "failures": failures, "peers": sorted(peers)})
    elif op == "loop":
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        counts, failures, started = {}, [], False
        while not stop.is_set():
            try:
                tag, _ = tcp_once(addr, port)
                counts[tag] = counts.get(tag, 0) + 1
            except OSError as e:
                failures.append(errno.errorcode.get(e.errno, repr(e)))
            if not started:
                started = True; out({"started": True})
        out({"counts": counts, "failures": failures})
    elif op == "udp":
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(5)
        if cmd["connected"]:
            s.connect((addr, port))
        replies = []
        for i in range(cmd["n"]):
            if cmd["connected"]:
                s.send(b"ping"); data = s.recv(64); frm = s.getpeername()
            else:
                s.sendto(b"ping", (addr, port)); data, frm = s.recvfrom(64)
            replies.append([data.decode(), list(frm[:2])])
        s.close()
        out({"replies": replies})
"""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reserved_port(host: str, kind: socket.SocketKind) -> socket.socket:
    """A socket bound to ``host``:0 that never listens or reads, so its port is a free
    virtual port: nothing else can take it while the socket is open, and an untranslated
    TCP connect to it is refused. The caller closes it."""
    sock = socket.socket(_family(host), kind)
    sock.bind((host, 0))
    return sock


class TcpBackend:
    """Accepts connections one by one, sends its tag, closes; counts what it accepted."""

    def __init__(self, tag: str, host: str = "127.0.0.1") -> None:
        self.tag = tag
        self.host = host
        self.accepted = 0
        self._goal = 0
        self._reached = threading.Event()
        self._sock = socket.socket(_family(host), socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(512)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.tag.encode())
            self.accepted += 1
            if self._goal and self.accepted >= self._goal:
                self._reached.set()

    def wait_for(self, more: int, timeout: float = 10.0) -> bool:
        """Wait until this backend has accepted ``more`` connections beyond now."""
        self._reached.clear()
        self._goal = self.accepted + more
        return self._reached.wait(timeout)

    def close(self) -> None:
        # shutdown() wakes the blocked accept() on Linux; close() alone would not.
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._sock.close()


class UdpBackend:
    """Answers each datagram with its tag; a datagram from itself stops it."""

    def __init__(self, tag: str, host: str = "127.0.0.1") -> None:
        self.tag = tag
        self.host = host
        self._sock = socket.socket(_family(host), socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            data, peer = self._sock.recvfrom(64)
            if data == b"stop":
                return
            self._sock.sendto(self.tag.encode(), peer)

    def close(self) -> None:
        with socket.socket(_family(self.host), socket.SOCK_DGRAM) as s:
            s.sendto(b"stop", (self.host, self.port))
        self._thread.join(5)
        self._sock.close()


class CgroupClient:
    """A subprocess inside ``cgroup`` that runs the client commands above."""

    def __init__(self, cgroup: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(cgroup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self.read()
        if not ready.get("ready"):
            raise RuntimeError(f"client did not start: {ready}")

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited with {self.proc.wait(5)}")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.proc.pid, 9)
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
