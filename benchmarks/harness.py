"""Process and machine helpers shared by the benchmark drivers (run.py, open_streams.py,
soak.py): child processes that are always cleaned up, ports, logs, CPU time and memory read
from /proc."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"


class Abort(Exception):
    """A failure that ends the run with a message (and no traceback)."""


class Procs:
    """Every child process this run started; all are killed (by process group) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], cpus: set[int] | None, log: Path | None = None,
              source: Path = ROOT, **kwargs: Any) -> subprocess.Popen[bytes]:
        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(args, stdout=kwargs.pop("stdout", out), stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=pin, env=child_env(source), **kwargs)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.returncode is None:  # not reaped yet, so its process group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: start_new_session=True
            deadline = time.monotonic() + timeout
            while True:
                try:  # wait for the leader to exit, without reaping it (WNOWAIT)
                    if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                        break
                except ChildProcessError:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.02)
            # The leader is a zombie until reaped, so the group id cannot have been reused:
            # kill what is left of the group (e.g. nginx workers), then reap.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, timeout=3.0)


def child_env(source: Path = ROOT) -> dict[str, str]:
    """The child's environment: no proxy settings, and `source` (this checkout, or the
    baseline's) first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path | None,
              timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Abort(f"{what} exited with code {proc.returncode} while starting"
                        + (f"; its log:\n{tail(log)}" if log else ""))
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise Abort(f"{what} did not listen on port {port} within {timeout:.0f} s"
                + (f"; its log:\n{tail(log)}" if log else ""))


def start_redis(procs: Procs, tmp: Path, cpus: set[int] | None) -> str:
    """A throwaway redis-server on 127.0.0.1 (Debian's package; nothing saved to disk) for
    the targets that share state through Redis; its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise Abort("redis-server is missing: install Debian's redis-server package")
    port = free_port()
    log = tmp / "redis.log"
    proc = procs.start([server, "--port", str(port), "--bind", HOST, "--save", "",
                        "--appendonly", "no", "--dir", str(tmp)], cpus, log)
    wait_port(port, proc, "redis-server", log)
    return f"redis://{HOST}:{port}/0"


def tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) or "(empty log)"


def split_request(buf: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The path and body of the first whole HTTP/1.1 request in `buf` and the bytes after
    it, or None until it has all come (Content-Length framing only: the drivers' own)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buf) < end + 4 + length:
        return None
    return lines[0].split(b" ")[1], buf[end + 4:end + 4 + length], buf[end + 4 + length:]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it (uvicorn's workers, nginx's worker).

    Read from each process's parent in /proc/<pid>/stat: /proc/<pid>/task/*/children needs
    a kernel option that not every kernel has (this project's VM lacks it)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(_stat_fields(int(entry.name))[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, ()))
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces): [state, ppid, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and its descendants, all summed (2 uvicorn workers
    count as the target's CPU just as one worker does)."""
    return sum(cpu_by_process(pid).values())


def cpu_by_process(pid: int) -> dict[int, float]:
    """User+system CPU time of a process and of each of its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    got = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(p)
            got[p] = (int(fields[11]) + int(fields[12])) / tick
    return got


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of a process and its descendants, summed."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit (children inherit it):
    1,000 open streams take ~2,000 sockets in the proxy, more than a default of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_busy_seconds() -> float:
    """User+system CPU time of the whole machine so far (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return (int(fields[1]) + int(fields[2]) + int(fields[3])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_on_signals() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does (KeyboardInterrupt), so the driver's
    `finally` stops every child process."""
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


def run_with_children(work: Callable[[Procs, Path], T],
                      prefix: str = "aiproxy-bench-") -> tuple[int, T | None]:
    """`work(procs, tmp)` with every child process it starts stopped and its temp dir removed
    however it ends: (0, its result), or (130, None) on Ctrl-C/SIGTERM/SIGHUP, (2, None)
    after an Abort (its message printed)."""
    procs = Procs()
    end_on_signals()
    raise_fd_limit()  # the children inherit it
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)  # nginx workers may run as another user
    try:
        return 0, work(procs, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every child process", file=sys.stderr)
        return 130, None
    except Abort as exc:
        print(f"\nABORT: {exc}", file=sys.stderr)
        return 2, None
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (as the targets do), else asyncio's loop."""
    import asyncio
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def serve_protocol(protocol: Callable[[], Any], port: int) -> None:
    """Serve a raw asyncio Protocol on 127.0.0.1:`port` until killed (the stand-in upstreams)."""
    import asyncio

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(protocol, HOST, port,
                                                                backlog=4096)
        async with server:
            await server.serve_forever()

    run_loop(main())
