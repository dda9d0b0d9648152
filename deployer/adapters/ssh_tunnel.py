"""The real `FleetLink` of `deployer fleet bench`: the system `ssh` client, run from argument
lists built in core (deployer/core/fleet/routes.py), never through a shell.

- A tunnel is `ssh -N -L 127.0.0.1:LOCAL:127.0.0.1:REMOTE` on a free local port. It is ready
  when its local port accepts a connection (ssh listens only once authenticated and the forward
  is made); it is closed (SIGTERM, then SIGKILL) when the `with` ends, by return, error or
  Ctrl-C. While one is open, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, so
  `kill` of deployer also closes it. ssh runs in deployer's process group: a Ctrl-C on the
  terminal reaches it too.
- An API key is read with `ssh HOST cat -- PATH` into memory: at most MAX_KEY_BYTES are read,
  it must be one printable line, and it is never printed, logged or written.
- ssh's own error output (bounded) gives the one-line reason a host failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO

from deployer.adapters.key_files import MAX_KEY_FILE_BYTES, is_one_key
from deployer.core.bench.samples import RequestSample
from deployer.core.bench.sweep import LoadRunner
from deployer.core.errors import HOST_KEY_HINT, TunnelFailed
from deployer.core.fleet.routes import LOOPBACK, SshRoute, read_file_argv, tunnel_argv
from deployer.core.fleet_bench.flow import ServerFacts
from deployer.core.untrusted import CONTROL_RE

READY_TIMEOUT_S = 30.0  # ConnectTimeout is 15 s; authentication may take a few more
READ_TIMEOUT_S = 30.0
MAX_KEY_BYTES = MAX_KEY_FILE_BYTES
MAX_STDERR_BYTES = 8192
BIND_ATTEMPTS = 3  # a free port taken by someone else before ssh binds it: try another


def _one_line(data: bytes) -> str:
    """ssh's last meaningful stderr line, printable, bounded."""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = lines[-1] if lines else "ssh ended without saying why"
    return " ".join(CONTROL_RE.sub(" ", text).split())[:300].rstrip(".")


def _hint(reason: str) -> str:
    if "host key" in reason.lower() or "hostkey" in reason.lower():
        return HOST_KEY_HINT
    if "permission denied" in reason.lower():
        return "Check ansible_user and ansible_ssh_private_key_file (fleet bench uses keys only)"
    return "Check that 'deployer fleet status' reaches the host"


def listener_owned_by(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux: from
    /proc/net/tcp and the process's fds); None where /proc cannot tell (another OS)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    inodes = {
        cols[9]
        for cols in (line.split() for line in lines)
        if len(cols) > 9 and cols[1] == want and cols[3] == "0A"  # 0A: LISTEN
    }
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()


def _read_bounded(stream: IO[bytes] | None, limit: int) -> bytes:
    return b"" if stream is None else stream.read(limit)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP as Ctrl-C while a tunnel is open, so its `finally` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class SshLink:
    """ssh tunnels and remote key reads for `fleet bench`; bench's HTTP client through them."""

    def __init__(self, on_request: Callable[[RequestSample], None] | None = None) -> None:
        self.on_request = on_request

    def _start(self, route: SshRoute, remote_port: int) -> tuple[subprocess.Popen[bytes], int]:
        """ssh with a forward whose local port answers; TunnelFailed with ssh's reason."""
        for _attempt in range(BIND_ATTEMPTS):
            port = _free_local_port()
            proc = subprocess.Popen(  # argv from core's validated route, no shell
                tunnel_argv(route, port, remote_port),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                state = self._wait(proc, port)
            except BaseException:
                _stop(proc)
                raise
            if state == "ready":
                return proc, port
            if state == "taken":
                _stop(proc)
                continue
            if state == "timeout":
                _stop(proc)
                raise TunnelFailed(route.host, f"no tunnel after {READY_TIMEOUT_S:g} s",
                                   _hint(""))  # fmt: skip
            reason = _one_line(_read_bounded(proc.stderr, MAX_STDERR_BYTES))
            _stop(proc)
            if "address already in use" not in reason.lower():
                raise TunnelFailed(route.host, reason, _hint(reason))
        raise TunnelFailed(route.host, "no free local port for the tunnel")

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], port: int) -> str:
        """'ready' once the forward's local port accepts, 'exited' if ssh ended, or 'timeout'."""
        end = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < end:
            if proc.poll() is not None:
                return "exited"
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                if s.connect_ex((LOOPBACK, port)) == 0:
                    if proc.poll() is not None:
                        return "exited"
                    # Between our probe of a free port and ssh's bind, another local program
                    # may have taken the port: requests with the key must not go to it.
                    return "taken" if listener_owned_by(proc.pid, port) is False else "ready"
            time.sleep(0.1)
        return "timeout"

    @contextlib.contextmanager
    def tunnel(self, route: SshRoute, remote_port: int) -> Iterator[str]:
        """The base URL of the host's 127.0.0.1:`remote_port` here, for the `with`."""
        if route.local:
            yield f"http://{LOOPBACK}:{remote_port}"
            return
        with _signals_interrupt():
            proc, port = self._start(route, remote_port)
            try:
                yield f"http://{LOOPBACK}:{port}"
            finally:
                _stop(proc)

    def read_key(self, route: SshRoute, path: str) -> str:
        """The API key at `path` on the host, checked to be one printable line; kept in memory."""
        if route.local:
            from deployer.adapters.bench_files import read_api_key

            return read_api_key(Path(path), "the deployment's API key file")
        proc = subprocess.Popen(  # argv from core's validated route, no shell
            read_file_argv(route, path),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        timer = threading.Timer(READ_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            data = _read_bounded(proc.stdout, MAX_KEY_BYTES + 1)
            if len(data) > MAX_KEY_BYTES:
                proc.kill()  # more than a key: stop reading a hostile host's output
            err = _read_bounded(proc.stderr, MAX_STDERR_BYTES)
            code = proc.wait(timeout=READ_TIMEOUT_S)
        finally:
            timer.cancel()
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if len(data) > MAX_KEY_BYTES:  # the key itself is never shown
            raise TunnelFailed(route.host, f"{path} is larger than {MAX_KEY_BYTES} bytes")
        if code != 0:
            reason = _one_line(err)
            raise TunnelFailed(route.host, f"cannot read the API key {path}: {reason}",
                               _hint(reason))  # fmt: skip
        try:
            key = data.decode("ascii").strip()
        except UnicodeDecodeError:
            key = ""
        if not is_one_key(key):
            # the key itself is never shown
            raise TunnelFailed(route.host, f"{path} does not hold one API key on one line")
        return key

    def server_facts(self, endpoint: str, api_key: str | None) -> ServerFacts:
        """Slots, context and served model from the server (deployer.adapters.loadgen)."""
        from deployer.adapters.loadgen import server_info

        info = server_info(endpoint, api_key)
        return ServerFacts(info.total_slots, info.ctx, info.model)

    def runner(
        self, endpoint: str, model: str, api_key: str | None, timeout_s: float
    ) -> LoadRunner:
        """bench's HTTP load generator, pointed at the tunnel."""
        from deployer.adapters.loadgen import HttpLoadRunner

        return HttpLoadRunner(
            endpoint, model=model, api_key=api_key, timeout_s=timeout_s,
            on_request=self.on_request or (lambda _sample: None),
        )  # fmt: skip
