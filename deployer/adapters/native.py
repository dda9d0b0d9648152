"""Supervise llama-server as a detached local process: start, wait healthy, probe, stop.

The process runs in its own session (its pid is its process group id), logs to a 0600 file
and is identified by its pid *and* its start time, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import psutil

from deployer.adapters.data_files import state_dir
from deployer.adapters.ports import check_port_free as check_port_free  # re-exported
from deployer.adapters.statefile import read_state_json, write_state_json
from deployer.core.errors import DeploymentGone, NativeExited, NativeHealthTimeout, StateFileInvalid
from deployer.core.state.record_fields import PID_MAX

LOG_TAIL_LINES = 20
TAIL_BLOCK = 64 * 1024
TAIL_MAX_BYTES = 16 * 1024 * 1024  # `logs -n HUGE` of a huge file reads no more than this


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


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_NOFOLLOW: a link planted at the log's path must not make us truncate what it points to.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had another mode
    return fd


def open_log(path: Path | str) -> BinaryIO | None:
    """The log file open for reading, or None when missing or not a regular file.

    Never a FIFO or a device: reading /dev/zero would never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        return None
    return f


def last_lines(f: BinaryIO, n: int, *, max_bytes: int = TAIL_MAX_BYTES) -> list[str]:
    """The last `n` lines of an open file, read backwards from its end, at most `max_bytes`."""
    if n <= 0:
        return []
    pos = f.seek(0, os.SEEK_END)
    buf = b""
    while pos > 0 and buf.count(b"\n") <= n and len(buf) < max_bytes:
        step = min(TAIL_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    f.seek(0, os.SEEK_END)
    lines = buf.decode("utf-8", "replace").splitlines()
    if pos > 0 and lines:
        lines = lines[1:]  # the first one read is only the end of a line
    return lines[-n:]


def tail_lines(path: Path | str, n: int = LOG_TAIL_LINES) -> list[str]:
    """The last `n` lines of a log file ([] when it is missing or not a regular file)."""
    f = open_log(path)
    if f is None:
        return []
    with f:
        return last_lines(f, n)


def save_process(name: str, proc: NativeProcess) -> None:
    """Write the pid file atomically, mode 0600."""
    write_state_json(process_file(name), asdict(proc))


def load_process(name: str) -> NativeProcess | None:
    """The pid file of `name`, or None when it is missing or not exactly what start wrote."""
    try:
        raw = read_state_json(process_file(name))
    except (FileNotFoundError, StateFileInvalid):
        return None
    if not isinstance(raw, dict) or set(raw) != {"pid", "create_time", "argv", "log_path"}:
        return None
    pid, created, argv, log = raw["pid"], raw["create_time"], raw["argv"], raw["log_path"]
    if isinstance(pid, bool) or not isinstance(pid, int) or not 2 <= pid <= PID_MAX:
        return None
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return None
    if not math.isfinite(created) or created <= 0:
        return None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    if not isinstance(log, str):
        return None
    return NativeProcess(pid, float(created), list(argv), log)


def remove_process_file(name: str) -> None:
    """Forget the pid file of `name`."""
    process_file(name).unlink(missing_ok=True)


def our_server(name: str, pid: int, port: int) -> psutil.Process | None:
    """The live process `pid` only when it is provably the server deploy started for `name`.

    A record's pid alone proves nothing (pids are reused; a state file can be edited), so the
    pid file must name the same pid, and the process must have the start time, the exact
    command line and the own process group that start gave it, run as this user, and serve
    `port`. Anything else is never signalled.
    """
    known = load_process(name)
    if known is None or known.pid != pid or pid in (1, os.getpid()):
        return None
    p = same_process(pid, known.create_time)
    if p is None:
        return None
    try:
        if p.cmdline() != known.argv or os.getpgid(pid) != pid or p.uids().real != os.getuid():
            return None
    except (psutil.Error, OSError):
        return None
    argv = known.argv
    serves = any(a == "--port" and argv[i + 1 : i + 2] == [str(port)] for i, a in enumerate(argv))
    return p if serves else None


def same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The live process `pid`, if it is still the one started at `create_time`."""
    if pid <= 1:
        return None  # 0 and -1 mean groups to kill(2); 1 is init
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(p.create_time() - create_time) > 0.01:
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
        """SIGTERM the process group, wait, then SIGKILL; what happened, in words.

        Only the process started at `create_time` is signalled: without a start time to check,
        nothing is.
        """
        if create_time is None:
            return f"pid {pid} cannot be verified as the server (no start time); left alone"
        p = same_process(pid, create_time)
        if p is None:
            _reap(pid)
            return "process already gone"
        group = _leads_group(pid)  # asked while it is known to be ours and alive
        _signal(p, signal.SIGTERM, group=group)
        try:
            p.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            _signal(p, signal.SIGKILL, group=group)
            try:
                p.wait(timeout=5)
            except psutil.TimeoutExpired:
                return f"pid {pid} did not stop after SIGKILL"
            return f"stopped pid {pid} (killed after {timeout_s:g} s)"
        if group:
            # Anything it left behind in its group. The group id stays reserved while any
            # member lives, so this cannot reach a process that reused the pid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return f"stopped pid {pid}"


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _signal(p: psutil.Process, sig: signal.Signals, *, group: bool) -> None:
    """Signal the verified process `p`, with its whole group when it leads one."""
    if p.pid <= 1:
        return  # kill(0 / -1) would reach this process's group or every process
    with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)  # psutil checks the pid was not reused in between


def _reap(pid: int) -> int | None:
    """Collect our own exited child (a zombie otherwise); its exit code when it was ours."""
    if pid <= 1:
        return None  # waitpid(0 / -1) would reap any child of ours
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_our_server(name: str, pid: int | None, port: int, *, timeout_s: float) -> str:
    """SIGTERM the server's process group, SIGKILL after timeout_s; only our own server."""
    if pid is None:
        return "process already gone"
    if our_server(name, pid, port) is None:
        if not pid_alive(pid):
            remove_process_file(name)
            return "process already gone"
        # The pid lives but is not provably ours (reused, or the state was edited): a record
        # must never lead to signalling an unrelated process.
        return (
            f"pid {pid} is not the server deploy started (its pid file, start time or "
            "command line differ); left alone"
        )
    known = load_process(name)
    said = NativeSupervisor().stop(
        pid=pid,
        create_time=known.create_time if known is not None else None,
        timeout_s=timeout_s,
    )
    remove_process_file(name)
    return said


def follow_log(name: str, path: Path, tail: int, follow: bool) -> Iterator[str]:
    """The last `tail` lines of a native server's log, then (with `follow`) each new one."""
    f = open_log(path)
    if f is None:
        raise DeploymentGone(name, f"its log {path} is missing or not a regular file")
    with f:
        yield from last_lines(f, tail)
        pending = b""
        while follow:
            chunk = f.readline(1 << 20)
            if chunk:
                pending += chunk
                if pending.endswith(b"\n") or len(pending) >= 1 << 20:
                    yield pending.decode("utf-8", "replace").rstrip("\n")
                    pending = b""
            else:
                time.sleep(0.5)
