"""A real `redis-server` on a free 127.0.0.1 port for the shared-state tests (Debian's
`redis-server` package; CI's .ci/run installs it), and its fixtures (a pytest plugin that
conftest.py names in `pytest_plugins`).

`redis_server` starts one per test and kills it after: `stop()` / `start()` (same port, empty
again), `pause()` / `resume()` (SIGSTOP: it accepts connections and never answers),
`command(...)` for a test's own look at what it holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from upstream_server import free_port

WITHIN = 10.0
"""Bounds every wait on the server (no test is timed)."""
MISSING = ("redis-server is not installed: the shared-state tests need a real one on"
           " 127.0.0.1 (Debian: apt-get install redis-server; CI's .ci/run installs it)")


class RedisServer:
    """A `redis-server` process on 127.0.0.1 that keeps nothing on disk."""

    def __init__(self, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(MISSING, pytrace=False)
        self.binary = binary
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WITHIN
        while True:
            try:
                if self.command("PING") == "PONG":
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server must be able to stop
            proc.terminate()
            try:
                proc.wait(WITHIN)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WITHIN)

    def pause(self) -> None:
        """The server stops answering (its port still accepts connections)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: str) -> str | int | list | None:
        """One command over a plain socket (RESP), its decoded answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=WITHIN) as sock:
            if self.password:
                _send(sock, "AUTH", self.password)
                _read(sock.makefile("rb"))
            _send(sock, *args)
            return _read(sock.makefile("rb"))


def _send(sock: socket.socket, *args: str) -> None:
    out = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        out += f"${len(data)}\r\n".encode() + data + b"\r\n"
    sock.sendall(out)


def _read(f) -> str | int | list | None:  # type: ignore[no-untyped-def]
    line = f.readline()
    if not line:
        raise ConnectionError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise AssertionError(f"redis-server answered an error: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == "-1":
            return None
        data = f.read(int(rest) + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [] if rest == "-1" else [_read(f) for _ in range(int(rest))]
    raise AssertionError(f"unexpected answer from redis-server: {line!r}")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test, killed after it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()

