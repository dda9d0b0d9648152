"""Supervise llama-server as a detached local process: start, wait healthy, probe, stop.

The process runs in its own session (its pid is its process group id), logs to a 0600 file
and is identified by its pid *and* its start time, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from deployer.core.deploy import NativeExited, NativeHealthTimeout
from deployer.core.resources import state_dir
from deployer.core.runtime_errors import PortInUse

LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class NativeProcess:
    """One supervised server: who it is (pid + start time), how it ran, where it logs."""

    pid: int
    create_time: float  # psutil's, seconds since the epoch
    argv: list[str] = field(default_factory=list)
    log_path: str = ""


def logs_dir() -> Path:
    """Where native servers log (under the state dir, 0700)."""
    return state_dir() / "logs"


def log_path_for(name: str) -> Path:
    """The log file of deployment `name`."""
    return logs_dir() / f"{name}.log"


def process_file(name: str) -> Path:
    """The pid file of deployment `name`: pid, start time and argv (no secrets in argv)."""
    return state_dir() / "native" / f"{name}.json"


def find_llama_server() -> Path:
    """DEPLOYER_LLAMA_PREFIX's binary, llama-server on PATH, else the cached (or fresh) build."""
    from deployer.adapters.image_build import llama_prefix

    on_path = shutil.which("llama-server")
    if on_path and not os.environ.get("DEPLOYER_LLAMA_PREFIX"):
        return Path(on_path)
    return llama_prefix() / "bin" / "llama-server"


def check_port_free(host_ip: str, port: int) -> None:
    """Refuse a port something already listens on (llama-server would only log it)."""
    with socket.socket() as s:
        try:
            s.bind((host_ip, port))
        except OSError:
            raise PortInUse(host_ip, port) from None


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had another mode
    return fd


def tail_lines(path: Path | str, n: int = LOG_TAIL_LINES) -> list[str]:
    """The last `n` lines of a log file ([] when it is missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f.readlines()[-n:]]
    except OSError:
        return []


def save_process(name: str, proc: NativeProcess) -> None:
    """Write the pid file atomically, mode 0600."""
    path = process_file(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(proc), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_process(name: str) -> NativeProcess | None:
    """The pid file of `name`, or None when missing or unreadable."""
    try:
        raw = json.loads(process_file(name).read_text(encoding="utf-8"))
        return NativeProcess(
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            argv=[str(a) for a in raw.get("argv", [])],
            log_path=str(raw.get("log_path", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_process_file(name: str) -> None:
    """Forget the pid file of `name`."""
    process_file(name).unlink(missing_ok=True)


def same_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process `pid`, if it is still the one started at `create_time`."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if create_time is not None and abs(p.create_time() - create_time) > 0.01:
            return None  # the pid was reused by another program
        return p
    except psutil.Error:
        return None


def probe_health(endpoint: str, *, timeout_s: float = 2.0) -> str:
    """`healthy` (200), `starting` (503: loading) or `unhealthy` (anything else)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/health", timeout=timeout_s) as resp:
            return "healthy" if resp.status == 200 else "unhealthy"
    except urllib.error.HTTPError as exc:
        return "starting" if exc.code == 503 else "unhealthy"
    except (urllib.error.URLError, OSError):
        return "unhealthy"


class NativeSupervisor:
    """The real local-process runtime."""

    def start(self, *, name: str, argv: list[str], log_path: Path) -> NativeProcess:
        """Start `argv` detached (own session), stdout and stderr into `log_path`."""
        fd = _open_log(log_path)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI; its pid is its process group
                close_fds=True,
            )
        except OSError as exc:
            problem = [f"cannot start {argv[0]}: {exc}"]
            raise NativeExited(name, None, str(log_path), problem) from None
        finally:
            os.close(fd)
        # Detached on purpose: the pid file, not this object, tracks the server from here on.
        popen.returncode = 0
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            created = time.time()
        proc = NativeProcess(popen.pid, created, list(argv), str(log_path))
        save_process(name, proc)
        return proc

    def wait_healthy(
        self,
        *,
        name: str,
        proc: NativeProcess,
        endpoint: str,
        timeout_s: float,
        on_progress: Callable[[float, str], None] | None = None,
        poll_s: float = 0.1,
    ) -> None:
        """Poll /health until 200; the process ending or the timeout is an error."""
        started = time.monotonic()
        last, status = "", "starting"
        while True:
            waited = time.monotonic() - started
            if not _reap_alive(proc):
                raise NativeExited(
                    name, _exit_code(proc.pid), proc.log_path, tail_lines(proc.log_path)
                )
            status = probe_health(endpoint, timeout_s=1.0)
            if status == "healthy":
                return
            if on_progress is not None and status != last:
                on_progress(waited, "loading the model" if status == "starting" else status)
                last = status
            if waited > timeout_s:
                raise NativeHealthTimeout(
                    name, timeout_s, status, proc.log_path, tail_lines(proc.log_path)
                )
            time.sleep(poll_s)

    def forget(self, *, name: str) -> None:
        """Drop the pid file of `name` (its log stays)."""
        remove_process_file(name)

    def stop(self, *, pid: int, create_time: float | None, timeout_s: float = 10.0) -> str:
        """SIGTERM the process group, wait, then SIGKILL; what happened, in words."""
        p = same_process(pid, create_time)
        if p is None:
            _reap(pid)
            return "process already gone"
        _signal_group(pid, signal.SIGTERM)
        try:
            p.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            _signal_group(pid, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except psutil.TimeoutExpired:
                return f"pid {pid} did not stop after SIGKILL"
            return f"stopped pid {pid} (killed after {timeout_s:g} s)"
        _signal_group(pid, signal.SIGKILL)  # anything it left behind in its group
        return f"stopped pid {pid}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pid: int) -> int | None:
    """Collect our own exited child (a zombie otherwise); its exit code when it was ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


_EXIT_CODES: dict[int, int | None] = {}


def _reap_alive(proc: NativeProcess) -> bool:
    code = _reap(proc.pid)
    if code is not None:
        _EXIT_CODES[proc.pid] = code
        return False
    return same_process(proc.pid, proc.create_time) is not None


def _exit_code(pid: int) -> int | None:
    return _EXIT_CODES.pop(pid, None)
