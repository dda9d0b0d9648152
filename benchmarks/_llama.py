"""Helpers for benchmarks that run a real llama-server (built by scripts/build-llama.sh)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 20) -> None:
    """Stop a server: SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def llama_prefix() -> Path:
    """Install prefix of the cached llama.cpp build, building it on a miss."""
    env = os.environ.get("DEPLOYER_LLAMA_PREFIX")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-llama.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerRun:
    """What one llama-server start logged and used."""

    log: str
    rss_bytes: int
    seconds_to_healthy: float


def server_log() -> IO[str]:
    """An unnamed file for a llama-server's output (a file, not a pipe: -v logs megabytes and a
    full pipe would block the server), read as UTF-8 with replacement: the log echoes sampled
    tokens, and bytes of a random vocabulary need not decode. The caller closes it."""
    return tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")


def in_group(group: Path, cmd: list[str]) -> list[str]:
    """`cmd` run so that it starts inside cgroup (v1 or v2) directory `group`: the shell joins
    the group, then becomes the command, so every page and read of it is charged there."""
    return ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]


def run_server(model: Path, args: list[str], timeout_s: float = 120.0) -> ServerRun:
    """Start llama-server -v with `args`, wait for /health 200, record RSS, stop it."""
    import psutil

    port = free_port()
    binary = llama_prefix() / "bin" / "llama-server"
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-v", *args]
    t0 = time.monotonic()
    logf = server_log()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    rss = 0
    healthy_at = 0.0
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        healthy_at = time.monotonic() - t0
                        rss = psutil.Process(proc.pid).memory_info().rss
                        break
            except OSError:
                time.sleep(0.2)
    finally:
        stop(proc)
        logf.seek(0)
        out = logf.read()
        logf.close()
    if not healthy_at:
        raise RuntimeError(f"llama-server did not become healthy: {' '.join(cmd)}\n{out[-3000:]}")
    return ServerRun(log=out, rss_bytes=rss, seconds_to_healthy=healthy_at)


# --- a run measured as the user lives with it: resident memory, a cgroup cap, decode speed ----

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_V1_BLKIO = Path("/sys/fs/cgroup/blkio")
# Token ids, not text: the sparse shape models carry a placeholder vocabulary (ids < 32000).
PROMPT = [1, 450, 4955, 310, 278, 14010, 3965, 16410]


@dataclass
class TrialRun:
    """One llama-server start, optionally under a cgroup memory cap, and what it did."""

    log: str
    peaks: Any  # fit_truth.ResidentPeaks
    tokens_per_s: list[float]  # llama-server's own timings.predicted_per_second, per completion
    error: str  # "" when it loaded and answered every completion
    exit_code: int | None  # None when we stopped it ourselves
    cgroup_max_usage_bytes: int = 0
    cgroup_failcnt: int = 0
    cgroup_failcnt_serving: int = 0  # of those, after /health said ready (decode pressure)
    cgroup_oom_kills: int = 0
    seconds: float = 0.0
    cgroup_stat: dict[str, int] = field(default_factory=dict)  # memory.stat after serving
    # With fill_tokens: RssAnon after a short answer, and how much a prompt that fills a
    # ubatch added to it (the compute buffer's pages a short prompt never touches).
    anon_short_bytes: int = 0
    fill_anon_bytes: int = 0
    fill_log: str = ""  # the log as the server had written it when the fill was read
    warmup_s: float = 0.0  # how long the untimed warm-up answers took (warmup_tokens)

    def log_at_fill(self) -> str:
        """The log as it was when the fill was read."""
        return self.fill_log


CGROUP_V2_ROOT = Path("/sys/fs/cgroup")


def cgroup_available() -> bool:
    """A memory cgroup a capped start can use: a v1 memory hierarchy, or a v2 one with its
    memory controller (root on the host; a v2 machine such as a GPU VM as well as this
    project's v1 CI). Proven by making a group and capping it: in a container's cgroup
    namespace /sys/fs/cgroup is not the root, and enabling the controller there can fail."""
    try:
        MemoryCgroup.create(f"deployer-probe-{os.getpid()}", 64 << 20).remove()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup made for one capped start, v1 or v2, read the same way."""

    path: Path
    v2: bool

    @classmethod
    def create(cls, name: str, cap_bytes: int) -> MemoryCgroup:
        """A fresh group capped at `cap_bytes`, no swap (OSError if it cannot be made; a group
        made but not capped is removed first)."""
        if (CGROUP_V1_MEMORY / "cgroup.procs").exists():
            made = cls(CGROUP_V1_MEMORY / name, v2=False)
            made.path.mkdir()
            limits = {"memory.limit_in_bytes": str(cap_bytes)}
        else:
            control = CGROUP_V2_ROOT / "cgroup.subtree_control"
            if "memory" not in control.read_text().split():
                control.write_text("+memory")
            made = cls(CGROUP_V2_ROOT / name, v2=True)
            made.path.mkdir()
            limits = {"memory.max": str(cap_bytes)}
            if (made.path / "memory.swap.max").exists():
                limits["memory.swap.max"] = "0"
        try:
            for file, value in limits.items():
                (made.path / file).write_text(value)
        except OSError:
            made.remove()
            raise
        return made

    def _events(self) -> dict[str, int]:
        return _read_stat(self.path, "memory.events")

    def failcnt(self) -> int:
        """How often the group hit its cap (v1 memory.failcnt; v2 memory.events' max). Judged
        only as zero or not, or against an earlier reading: v2 counts each reclaim attempt at
        the cap, so its numbers run on another scale than v1's."""
        if self.v2:
            return self._events().get("max", 0)
        return _read_int(self.path / "memory.failcnt")

    def max_usage(self) -> int:
        """The group's peak charge (v1 max_usage_in_bytes; v2 memory.peak, kernel 5.19+;
        0 where the kernel has neither)."""
        return _read_int(self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes"))

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this group."""
        if self.v2:
            return self._events().get("oom_kill", 0)
        return _oom_kills(self.path)

    def stat(self) -> dict[str, int]:
        """memory.stat (keys differ: v1 rss/mapped_file/..., v2 anon/file/file_mapped/...)."""
        return _read_stat(self.path)

    def remove(self) -> None:
        """Remove the group once its processes are gone."""
        _remove_cgroup(self.path)


def drop_file_cache(path: Path) -> None:
    """Evict the file's clean page-cache pages, so the next run faults them in (and a cgroup is
    charged for them: a page is charged to the group that first brings it in)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_stat(cg: Path, name: str = "memory.stat") -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in (cg / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out


def _oom_kills(cg: Path) -> int:
    try:
        for line in (cg / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def wait_healthy(
    port: int, proc: subprocess.Popen[str], timeout_s: float = 120, probe_timeout_s: float = 1
) -> None:
    """Return once llama-server on `port` answers /health; RuntimeError if it exits first or
    is not healthy within `timeout_s` (each probe waits up to `probe_timeout_s`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError("llama-server exited before it was healthy")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/health", timeout=probe_timeout_s
            ) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("llama-server was not healthy in time")


def post_completion(port: int, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """POST `request` to llama-server's /completion; its JSON reply."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return dict(json.loads(r.read()))


# Each sampled request's seed: the next of this counter (the same sequence in every run).
_SEEDS = itertools.count(7)


def sampled_request(seed: int | None = None) -> dict[str, Any]:
    """Plain sampling fields for one request: a different token at each step (greedy decoding
    of a random-weights model falls into a cycle of two or three tokens) and a seed of its own,
    so that no two requests produce the same tokens, as no two users' requests do. With one
    seed for every request, each answer replayed the one before it: a routed MoE then touched
    only the experts the last answer had left in memory, and a mapped MoE looked as if it
    could hold a third of its experts cold at full speed (the caps of 2026-11-30, superseded).
    `seed` fixes it instead (the same answers in starts that are compared answer by answer)."""
    seed = next(_SEEDS) if seed is None else seed
    return {"temperature": 1.0, "seed": seed, "top_k": 0, "top_p": 1.0, "min_p": 0.0}


def _complete(
    port: int,
    n_predict: int,
    timeout_s: float,
    sample: bool = False,
    prompt: list[int] | None = None,
    slot: int | None = None,
) -> float:
    request: dict[str, Any] = {
        "prompt": PROMPT if prompt is None else prompt,
        "n_predict": n_predict,
        "temperature": 0,
        "ignore_eos": True,
        # A turn of a conversation keeps its slot's state for the next; other requests start
        # from nothing, as every timed answer must.
        "cache_prompt": slot is not None,
    }
    if slot is not None:
        request["id_slot"] = slot
    if sample:
        request |= sampled_request()
    reply = post_completion(port, request, timeout_s)
    return float(reply["timings"]["predicted_per_second"])


def run_trial(
    model: Path,
    args: list[str],
    *,
    cap_bytes: int | None = None,
    completions: int = 1,
    n_predict: int = 32,
    timeout_s: float = 180.0,
    enough_tokens_per_s: float = 0.0,
    completion_timeout_s: float | None = None,
    poll_s: float = 0.05,
    sample: bool = False,
    fill_tokens: int = 0,
    fill_turns: tuple[int, ...] = (),
    fill_slots: int = 1,
    warmup_tokens: int = 0,
    serve_read_bps: int | None = None,
) -> TrialRun:
    """Start llama-server (inside a fresh cgroup capped at `cap_bytes` when given), wait for
    health, run up to `completions` completions (stopping early once one reaches
    `enough_tokens_per_s`), polling /proc/PID/status for resident peaks throughout. Everything
    is bounded by `timeout_s`, each completion by `completion_timeout_s`: a thrashing server is
    killed, not waited on. `sample` asks for sampled rather than greedy tokens (a routed MoE
    shape: each token picks its own experts only if the tokens differ). With `fill_tokens`,
    a short answer and then one prompt of that many tokens (a full ubatch touches every page of
    the compute buffer, as a long prompt of a real user does; a short one touches a corner)
    come before the timed completions, and RssAnon is read after each. With `fill_turns`
    instead, the long prompt is a conversation in each of `fill_slots` slots: prompts of those
    lengths, each extending the last (fit_truth.conversation_turns: a sliding-window model's
    checkpoints). With `warmup_tokens`, answers of `n_predict` tokens, untimed, come first until
    that many were generated: a routed MoE under a cap reaches its working set only after the
    kernel has evicted the pages the load left behind (docs/fit.md, a mapped MoE's first
    tokens). With `serve_read_bps` (cgroup v1), the server's reads from the model's disk are
    throttled to that rate once it is healthy: a slower disk, or a faster CPU for the same
    disk, for whatever the server reads back while it serves (its load is not slowed)."""
    from fit_truth import ResidentPeaks, parse_proc_status

    port = free_port()
    binary = llama_prefix() / "bin" / "llama-server"
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-v", *args]
    drop_file_cache(model)
    cg: MemoryCgroup | None = None
    if cap_bytes is not None:
        cg = MemoryCgroup.create(f"deployer-fitbench-{os.getpid()}-{port}", cap_bytes)
        cmd = in_group(cg.path, cmd)
    blkio: Path | None = None
    if serve_read_bps is not None:
        blkio = CGROUP_V1_BLKIO / f"deployer-fitbench-io-{os.getpid()}-{port}"
        try:
            blkio.mkdir()
        except OSError:
            if cg is not None:
                cg.remove()
            raise
        cmd = in_group(blkio, cmd)
    peaks = ResidentPeaks()
    speeds: list[float] = []
    error = ""
    t0 = time.monotonic()
    logf = server_log()
    try:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    except OSError:
        logf.close()
        if cg is not None:
            cg.remove()
        if blkio is not None:
            _remove_cgroup(blkio)
        raise
    status = Path(f"/proc/{proc.pid}/status")
    result: dict[str, Any] = {}

    def poll_peaks() -> None:
        with contextlib.suppress(OSError):
            peaks.add(parse_proc_status(status.read_text()))

    def client() -> None:
        try:
            try:
                # A loading server under a tight cap answers slowly: 2 s a probe.
                wait_healthy(port, proc, timeout_s - (time.monotonic() - t0), probe_timeout_s=2)
            except RuntimeError:
                if proc.poll() is None:  # an exit is the main loop's to report ("exited N")
                    result["error"] = "timeout before healthy"
                return
            if cg is not None:
                result["failcnt_ready"] = cg.failcnt()
            if blkio is not None and serve_read_bps is not None:
                throttle_reads(blkio, model, serve_read_bps)
            if fill_tokens or fill_turns:
                left = timeout_s - (time.monotonic() - t0)
                _complete(port, 1, left, sample)
                result["anon_short"] = parse_proc_status(status.read_text()).anon
                if fill_turns:
                    for k in range(fill_slots):
                        # Each slot its own conversation (tokens that differ from the others').
                        tokens = list(range(10 + 1000 * k, 10 + 1000 * k + max(fill_turns)))
                        for n in fill_turns:
                            left = timeout_s - (time.monotonic() - t0)
                            _complete(port, 1, left, sample, prompt=tokens[:n], slot=k)
                else:
                    left = timeout_s - (time.monotonic() - t0)
                    _complete(port, 1, left, sample, prompt=list(range(10, 10 + fill_tokens)))
                # llama.cpp's log writer is a thread of its own: a moment for its lines.
                time.sleep(0.3)
                result["anon_fill"] = parse_proc_status(status.read_text()).anon
                size = os.fstat(logf.fileno()).st_size
                text = os.pread(logf.fileno(), size, 0).decode("utf-8", "replace")
                result["fill_log"] = text
            # The warm-up is bounded by the trial's time only: its answers are the transient it
            # is there to leave out, and a per-answer limit would judge them.
            warmed, t_warm = 0, time.monotonic()
            while warmed < warmup_tokens:
                left = timeout_s - (time.monotonic() - t0)
                if left <= 1:
                    result["error"] = "timeout while warming up"
                    return
                try:
                    _complete(port, n_predict, left, sample)
                except TimeoutError:
                    result["error"] = f"slow (warm-up not done in {timeout_s:.0f} s)"
                    return
                warmed += n_predict
            result["warmup_s"] = time.monotonic() - t_warm
            for _ in range(completions):
                left = timeout_s - (time.monotonic() - t0)
                if left <= 1:
                    result["error"] = "timeout during completion"
                    return
                if completion_timeout_s is not None:
                    left = min(left, completion_timeout_s)
                try:
                    speeds.append(_complete(port, n_predict, left, sample))
                except TimeoutError:
                    result["error"] = f"slow (no answer in {left:.0f} s)"
                    return
                if enough_tokens_per_s and speeds[-1] >= enough_tokens_per_s:
                    return
                # A cap not hit while serving cannot have slowed it: one answer is enough.
                if cg is not None and cg.failcnt() == result["failcnt_ready"]:
                    return
        except (OSError, ValueError, KeyError) as e:
            result["error"] = f"request failed: {type(e).__name__}"

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    exit_code: int | None = None
    stat: dict[str, int] = {}
    try:
        while worker.is_alive():
            poll_peaks()
            if proc.poll() is not None:
                break
            if time.monotonic() - t0 > timeout_s + 5:
                result.setdefault("error", "timeout")
                break
            time.sleep(poll_s)
        poll_peaks()
        exit_code = proc.poll()
        # The group's split (anon, mapped file, active/inactive file, major faults) while the
        # server is still alive: what a capped run actually held.
        stat = cg.stat() if cg is not None and exit_code is None else {}
        if exit_code is not None:
            error = result.get("error") or f"exited {exit_code}"
            if exit_code in (-9, 137):
                error = "killed (oom)" if cg is not None else f"exited {exit_code}"
        else:
            error = result.get("error", "")
    finally:
        if proc.poll() is None:
            stop(proc, timeout_s=10)
        worker.join(timeout=5)
        logf.seek(0)
        out = logf.read()
        logf.close()
        run = TrialRun(out, peaks, speeds, error, exit_code, seconds=time.monotonic() - t0)
        run.cgroup_stat = stat
        run.warmup_s = result.get("warmup_s", 0.0)
        if "anon_fill" in result:
            run.anon_short_bytes = result["anon_short"]
            run.fill_anon_bytes = max(0, result["anon_fill"] - result["anon_short"])
            run.fill_log = result["fill_log"]
        if cg is not None:
            run.cgroup_max_usage_bytes = cg.max_usage()
            run.cgroup_failcnt = cg.failcnt()
            run.cgroup_failcnt_serving = run.cgroup_failcnt - result.get("failcnt_ready", 0)
            run.cgroup_oom_kills = cg.oom_kills()
            if run.cgroup_oom_kills and "oom" not in run.error:
                run.error = f"killed (oom){': ' + run.error if run.error else ''}"
        try:
            if cg is not None:
                cg.remove()
        finally:
            if blkio is not None:
                _remove_cgroup(blkio)
    return run


def read_throttle_device(path: Path) -> str | None:
    """MAJOR:MINOR of the whole disk that holds `path`, as cgroup v1's blkio throttle rules
    name it (a partition's reads are throttled on its disk); None where the file system has no
    block device of its own (btrfs subvolumes, overlay, tmpfs: device 0:N)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    if major == 0:
        return None
    node = Path(f"/sys/dev/block/{major}:{minor}")
    if (node / "partition").exists():
        try:
            return (node.resolve().parent / "dev").read_text().strip()
        except OSError:
            return None
    return f"{major}:{minor}" if node.exists() else None


def throttle_reads(blkio: Path, model: Path, read_bps: int) -> None:
    """Throttle the reads of the processes in cgroup v1 blkio group `blkio` from `model`'s disk
    to `read_bps` bytes a second (OSError where that disk cannot be named or throttled)."""
    device = read_throttle_device(model)
    if device is None:
        raise OSError(f"no block device to throttle for {model}")
    (blkio / "blkio.throttle.read_bps_device").write_text(f"{device} {read_bps}")


def _remove_cgroup(cg: Path) -> None:
    # The processes are gone; the group's leftover page-cache charges move to the parent.
    for _ in range(50):
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
