"""Fit accuracy: deployer's memory estimate vs what a real llama-server allocates and needs.

Runs llama-server (scripts/build-llama.sh, cached) on the demo model and on real-shaped sparse
GGUFs of public architectures, over a grid of settings (context, 1 and 4 slots, KV f16/q8_0,
flash attention on/off, mmap on/off). For each setting it records:

- the buffers llama-server logs (`... buffer size = X MiB`: weights, KV, compute, output);
- the peak resident memory, anonymous and file-backed (/proc/PID/status polled through the
  load and a completion);
- with --caps, on the settings marked for it: the smallest cgroup memory cap (no swap) under
  which the server loads, answers and decodes within 10% of its uncapped speed (bisection to
  64 MiB, 8 MiB for small servers; needs root and a v1 or v2 memory cgroup);
- with --plan-caps, on every setting: the plan's own host total tried as a cap (must pass) and
  the plan / 1.10 (must fail), the cap searched only where one of them contradicts the target
  (fit_truth.check_plan_as_cap). MoE shapes run from a routed copy (shapes.give_routing) and
  answer with sampled tokens, so that each token picks its own experts.

    python benchmarks/fit_accuracy.py [--quick] [--full] [--caps | --plan-caps]
                                      [--models demo,llama2-7b|all]
                                      [--settings 0,1] [--model PATH] [--threads 2]
                                      [--n-predict 32] [--out FILE] [--render FILE]

Prints a table and writes benchmarks/results/fit_accuracy.json.
Targets per setting: KV within 1 MiB of the log; weights within 1% of the log; the plan's host
total at least the measured full-speed cap and at most 1.10x it. --quick (CI) keeps the old
summary targets as well: buffer total within 3% median and never more than 2% under.
The demo model is what the compute-buffer coefficients were fitted on: its rows are in-sample;
every other model is out of sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import (
    CGROUP_V1_BLKIO,
    TrialRun,
    cgroup_available,
    llama_prefix,
    read_throttle_device,
    run_trial,
)
from fit_truth import (
    IN_SAMPLE_MODELS,
    TrialOutcome,
    bisect_cap,
    bounds_of_trials,
    check_plan_as_cap,
    check_targets,
    conversation_turns,
    is_marginal,
    judge_trial,
    merge_rows,
    resolution_for,
    row_key,
)

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.adapters.local_models import demo_model_path
from deployer.adapters.system_probe import disk_read_ahead
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import (
    CTX_CHECKPOINTS,
    DeviceMemory,
    FitSettings,
    MachineSpec,
    estimate_memory,
)
from deployer.core.hardware.detect import parse_read_ahead
from deployer.core.units import GIB, MIB

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    """One llama-server configuration."""

    ctx: int
    slots: int = 1
    kv: str = "f16"
    fa: bool = True
    ub: int = 512
    mmap: bool = True
    cap: bool = False  # search the smallest full-speed cap here (with --caps)
    gpu: bool = False  # every layer offloaded (benchmarks/fit_gpu.py)

    @property
    def batch(self) -> int:
        """-b: the logical batch (llama-server's default 2048, at least a ubatch)."""
        return max(self.ub, 2048)

    def args(self, threads: int) -> list[str]:
        """llama-server flags for this setting."""
        args = ["-c", str(self.ctx), "-np", str(self.slots), "-fa", "on" if self.fa else "off"]
        args += ["--fit", "off", "-ub", str(self.ub), "-b", str(self.batch)]
        # As deployer renders it: no host prompt cache beyond what the plan budgets (none here;
        # llama-server's own default keeps up to 8 GiB of saved prompt states).
        args += ["--cache-ram", "0"]
        # As deployer renders it: three context checkpoints a slot (a sliding-window model's;
        # none for the others), not the server's 32.
        args += ["--ctx-checkpoints", str(CTX_CHECKPOINTS)]
        # A quantized V cache needs flash attention; without it only K is quantized.
        args += ["-ctk", self.kv, "-ctv", self.kv if self.fa else "f16"]
        args += ["-t", str(threads), "-tb", str(threads)]
        if not self.mmap:
            args += ["--load-mode", "none"]
        if self.gpu:
            args += ["-ngl", "999"]
        return args

    def fit_settings(self) -> FitSettings:
        """The estimator's view of this setting."""
        kw: dict[str, Any] = {
            "ctx": self.ctx,
            "parallel": self.slots,
            "kv_type_k": self.kv,
            "kv_type_v": self.kv if self.fa else "f16",
            "flash_attention": self.fa,
            "n_ubatch": self.ub,
        }
        kw["load_mode"] = "mmap" if self.mmap else "none"
        if self.gpu:
            kw["n_gpu_layers"] = 999  # the output layer and every block
        return FitSettings(**kw)


# The demo grid of earlier versions (ctx 512..32768, slots, KV types, FA, ubatch), plus mmap off.
DEMO_GRID: list[Setting] = [
    Setting(512),
    Setting(2048),
    Setting(4096, cap=True),
    Setting(8192),
    Setting(32768),
    Setting(4096, fa=False),
    Setting(16384, fa=False),
    Setting(8192, kv="q8_0"),
    Setting(8192, kv="q4_0"),
    Setting(32768, kv="q8_0"),
    Setting(16384, 4),
    Setting(16384, 4, fa=False),
    Setting(32768, 4, "q4_0"),
    Setting(4096, 4, "q8_0"),
    Setting(4096, ub=128),
    Setting(4096, fa=False, ub=2048),
    Setting(4096, mmap=False, cap=True),
    Setting(16384, 4, "q8_0", mmap=False),
]
QUICK = [0, 3, 5, 7, 8, 10, 12, 14]
# Shape models: a few settings by default, all of them with --full.
SHAPE_GRID: list[Setting] = [
    Setting(4096, cap=True),
    Setting(4096, mmap=False, cap=True),
    Setting(8192, kv="q8_0"),
    Setting(4096, 4, fa=False),
    Setting(8192, cap=True),  # the setting issue 10's done-when names for a 7B-8B
    Setting(2048, 4, "q8_0"),
    Setting(8192, 4, "q8_0", mmap=False),
    Setting(2048, fa=False),
]
SHAPE_DEFAULT = 4

# The plan is made for this machine: its threads and its disks' read-around (read_ahead_kb),
# which decides how much room a mapped model needs beside its hot pages (docs/fit.md).
READ_AHEAD_KB = parse_read_ahead(disk_read_ahead()) or 128
CPU_MACHINE = MachineSpec(
    kind="cpu",
    device_count=0,
    device_budget_bytes=0,
    device_overhead_bytes=0,
    host_budget_bytes=64 * GIB,
    cpu_threads=os.cpu_count() or 0,
    read_ahead_bytes=READ_AHEAD_KB * 1024,
)


BPE_SUFFIX = ".bpe"


def available_models() -> list[str]:
    """'demo', the shapes of benchmarks/shapes.py, and the tests' Llama 2 7B shape (MHA)."""
    try:
        import shapes
    except ImportError:
        return ["demo", "llama2-7b"]
    return ["demo", *shapes.SHAPES, "llama2-7b"]


def bpe_models() -> list[str]:
    """NAME.bpe: a shape with its real byte-level BPE tokenizer (kind and merge count) in place
    of the placeholder SentencePiece vocabulary (shapes.build(..., bpe=True)); by name only, not
    in `all` (each is a second full-size file)."""
    try:
        import shapes
    except ImportError:
        return []
    return [f"{n}{BPE_SUFFIX}" for n, s in shapes.SHAPES.items() if s.n_merges]


def build_model(name: str, work_dir: Path, *, dense: bool = False) -> Path:
    """A runnable GGUF for `name`: a private copy of the demo, or a real-shaped file (sparse, or
    with `dense` its weights written out as real zero blocks)."""
    path = _build_sparse(name, work_dir)
    if not dense or name == "demo":
        return path
    # A hole refaults for free (the kernel zero-fills it, no read): a page dropped under a cap
    # would cost nothing, and a thrashing server would look healthy. Real blocks must be read.
    # An MoE shape is also given routing (shapes.give_routing): with zero weights every token
    # picks the same experts, and a mapped model's other experts would look cold.
    import shapes

    moe = _is_moe(name)
    # the routed copy's name carries the routing's version: a copy made by older rules is
    # never reused, and is removed once its successor exists (an MoE copy is gigabytes)
    out = work_dir / f"{path.stem}.{f'routed{shapes.ROUTING_VERSION}' if moe else 'dense'}.gguf"
    if not out.exists() or out.stat().st_size != path.stat().st_size:
        tmp = out.with_suffix(".part")
        subprocess.run(["cp", "--sparse=never", str(path), str(tmp)], check=True)
        if moe:
            shapes.give_routing(tmp)
        tmp.replace(out)
    if moe:
        for old in work_dir.glob(f"{path.stem}.routed*.gguf"):
            if old != out:
                old.unlink()
    return out


def _is_moe(name: str) -> bool:
    try:
        import shapes
    except ImportError:
        return False
    shape = shapes.SHAPES.get(name.removesuffix(BPE_SUFFIX))
    return shape is not None and shape.layout.moe


def _build_sparse(name: str, work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        # A private copy: other servers mapping the shared file would keep its pages resident
        # (and charged to their own groups), hiding what this server really needs.
        out = work_dir / "demo.gguf"
        src = demo_model_path()
        if not out.exists() or out.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, out)
        return out
    if name == "llama2-7b":
        sys.path.insert(0, str(REPO / "tests" / "unit"))
        from gguf_edit import llama_header, write_sparse

        out = work_dir / "llama2-7b.gguf"
        if not out.exists():
            h = llama_header(work_dir / "llama2-7b.header")
            write_sparse(out, h.core, h.data_bytes)
        return out
    import shapes

    base = name.removesuffix(BPE_SUFFIX)
    return Path(shapes.build(base, work_dir, bpe=base != name))


def weights_as_logged(host: DeviceMemory) -> tuple[int, str]:
    """The estimate's figure for what llama-server logs as host model buffers (mapped file +
    CPU_REPACK copies), and the field it came from: logged_weights_bytes since the estimator
    counts resident weights once (weights_bytes); looked up by name so a rename degrades to
    weights_bytes instead of breaking the benchmark."""
    for name in (
        "weights_logged_bytes",
        "logged_weights_bytes",
        "weights_buffer_bytes",
        "buffer_weights_bytes",
    ):
        value = getattr(host, name, None)
        if isinstance(value, int):
            return value, name
    return host.weights_bytes, "weights_bytes"


def _outcome(run: TrialRun, reference_tps: float) -> TrialOutcome:
    reason = judge_trial(run.error, run.tokens_per_s, reference_tps, run.cgroup_failcnt_serving)
    return TrialOutcome(
        ok=not reason,
        reason=reason,
        tokens_per_s=max(run.tokens_per_s, default=0.0),
        cgroup_max_usage_bytes=run.cgroup_max_usage_bytes,
        cgroup_failcnt=run.cgroup_failcnt,
        cgroup_failcnt_serving=run.cgroup_failcnt_serving,
    )


def fill_tokens(s: Setting) -> int:
    """The long prompt's length: a ubatch and a few more, or as much as one slot's context
    holds when that is shorter (no user prompt can be longer either). Without flash attention
    the whole slot: the KQ matrix (ubatch x cells in use x heads, f32) grows with the cells a
    batch attends over, and llama.cpp sizes it for a full cache; a 520-token prompt in a
    2048-token slot touched about a third of it, and the server's memory read ~100 MiB short of
    what a user who fills the slot makes it hold."""
    slot = s.ctx // s.slots - 8
    return max(0, slot if not s.fa else min(s.ub + 8, slot))


_CHECKPOINT_LINE = re.compile(
    r"id\s+(?P<slot>\d+) \|.*?(?P<verb>created|erasing|erased)\b[^(]*context checkpoint"
    r"[^(]*\(pos_min = (?P<lo>-?\d+), pos_max = (?P<hi>-?\d+), n_tokens = (?P<n>\d+)"
    r".*size = (?P<mib>[\d.]+) MiB"
)


_SUPERSEDED_LINE = re.compile(
    r"id\s+(?P<slot>\d+) \|.*superseding context checkpoint at n_tokens = (?P<n>\d+)"
)


def checkpoints_held(log: str) -> list[float]:
    """The sizes (MiB) of the context checkpoints llama-server held at the end of `log`, from
    its lines (-v) for each one created and each one erased, slot by slot."""
    held: list[tuple[str, ...]] = []
    for line in log.splitlines():
        if m := _SUPERSEDED_LINE.search(line):  # replaced by a new one at the same n_tokens
            held = [k for k in held if (k[0], k[3]) != (m["slot"], m["n"])]
        elif m := _CHECKPOINT_LINE.search(line):
            key = (m["slot"], m["lo"], m["hi"], m["n"], m["mib"])
            if m["verb"] == "created":
                held.append(key)
            elif key in held:
                held.remove(key)
    return [float(k[-1]) for k in held]


# A routed MoE is judged after this many tokens of untimed answers, uncapped and capped alike:
# under a cap its first answers re-read experts while the kernel evicts the pages of the
# tensors the load repacked (DeepSeek-V2-Lite at its plan: 0.8x at first, settled after about
# 200 tokens; docs/fit.md, a mapped MoE's experts). A dense model touches every weight each
# token and has no such transient.
MOE_WARMUP_TOKENS = 320


def capped_run(
    model: str,
    path: Path,
    s: Setting,
    cap: int,
    unpressed: list[float],
    *,
    threads: int,
    n_predict: int,
    timeout_s: float,
    serve_read_bps: int | None = None,
) -> TrialRun:
    """One start of `model` under `cap`, bounded by what a full-speed answer takes. A start the
    cap did not touch while serving is an uncapped run too: its best speed joins `unpressed`."""
    speed = full_speed(unpressed)
    run = run_trial(
        path,
        s.args(threads),
        cap_bytes=cap,
        completions=3,
        n_predict=n_predict,
        timeout_s=timeout_s,
        enough_tokens_per_s=0.9 * speed,
        # Three times the time a full-speed answer takes: slower is a fail anyway.
        completion_timeout_s=10 + 3 * n_predict / max(speed, 0.01),
        sample=_is_moe(model),
        warmup_tokens=MOE_WARMUP_TOKENS if _is_moe(model) else 0,
        serve_read_bps=serve_read_bps,
    )
    if run.tokens_per_s and not run.error and run.cgroup_failcnt_serving == 0:
        unpressed.append(max(run.tokens_per_s))
    return run


def full_speed(unpressed: list[float]) -> float:
    """The uncapped speed a pressed start is held to: the median of the answers no cap touched
    (each of the reference's answers, and each unpressed start's best). The best of them was
    used before; on a shared 2-core VM it sits above the typical answer, and a pressed start is
    slowed by the same noise as the rest."""
    return statistics.median(unpressed) if unpressed else 0.0


class UncappedFailure(Exception):
    """llama-server failed with no cap at all: the setting has nothing to judge against."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def measure(
    model: str,
    path: Path,
    s: Setting,
    *,
    threads: int,
    caps: bool,
    n_predict: int,
    plan_caps: bool = False,
    machine: MachineSpec = CPU_MACHINE,
    floor_bytes: int | None = None,
    ceiling_bytes: int | None = None,
    serve_read_bps: int | None = None,
) -> dict[str, Any]:
    """One row: logged buffers, resident peaks, the estimate, and (maybe) the cap search, or
    with `plan_caps` the plan's own figure tried as a cap (check_plan_as_cap). The plan is made
    for `machine` (a GPU one for a setting with layers offloaded: benchmarks/fit_gpu.py). A
    search takes a cap below 0.9 x the uncapped anonymous peak to fail, or below `floor_bytes`
    where given (a GPU process's anonymous memory holds driver mappings no cgroup is charged
    for); it starts at 1.05 x the uncapped peak, or at `ceiling_bytes` where given (a GPU
    process's peak holds every weight page it copied to the device)."""
    search_cap = caps and s.cap
    # The reference run: best of 3 decodes when a cap search needs a speed to hold, else one
    # short completion (resident peaks cover load and answering).
    judged = search_cap or plan_caps
    facts = facts_from_gguf(path)
    est = estimate_memory(facts, s.fit_settings(), machine).host
    # A model that keeps context checkpoints (sliding window, recurrent state) holds the most
    # after a conversation in every slot, not after one long prompt.
    turns: list[int] = []
    if judged and est.checkpoint_bytes:
        window = facts.arch.sliding_window or s.ctx
        turns = conversation_turns(s.ctx // s.slots, s.ub, window, s.batch)
    ref = run_trial(
        path,
        s.args(threads),
        completions=3 if judged else 1,
        n_predict=n_predict,
        timeout_s=900,
        sample=_is_moe(model),
        warmup_tokens=MOE_WARMUP_TOKENS if _is_moe(model) and judged else 0,
        serve_read_bps=serve_read_bps,
        # A prompt that fills a ubatch touches the whole compute buffer, as a user's long
        # prompt does; a short one touches a corner of it. What it adds to the anonymous memory
        # (measured here, once) is added to every capped start's cap below.
        fill_tokens=fill_tokens(s) if judged and not turns else 0,
        fill_turns=tuple(turns),
        fill_slots=s.slots,
    )
    if ref.error:
        raise UncappedFailure(f"{model} {s}: llama-server failed uncapped: {ref.error}", ref.log)
    logged = parse_buffers(ref.log.split("loaded meta data")[-1])
    real = {c: logged.get("host", c) for c in ("model", "compute", "output")}
    real["KV"] = logged.cache("host")  # a recurrent model's state (RS) with its KV
    row: dict[str, Any] = {
        "model": model,
        "in_sample": model in IN_SAMPLE_MODELS,
        "ctx": s.ctx,
        "slots": s.slots,
        "kv_type": s.kv,
        "flash_attention": s.fa,
        "ubatch": s.ub,
        "mmap": s.mmap,
        "weights_real": real["model"],
        "kv_real": real["KV"],
        "compute_real": real["compute"],
        "output_real": real["output"],
        "total_real": sum(real.values()),
        "rss_anon_peak": ref.peaks.anon,
        "rss_file_peak": ref.peaks.file,
        "rss_shmem_peak": ref.peaks.shmem,
        "vm_hwm": ref.peaks.hwm,
        "rss_samples": ref.peaks.samples,
        "tokens_per_s": [round(t, 2) for t in ref.tokens_per_s],
        "warmup_s": round(ref.warmup_s, 1),
        "rss_anon_short": ref.anon_short_bytes,
        "fill_anon": ref.fill_anon_bytes,
        # The long prompt: one (its length), or a conversation of these lengths in each slot.
        "fill_turns": turns or None,
        # What the conversations left, read off the log as it was when `fill_anon` was.
        "checkpoints_mib": checkpoints_held(ref.log_at_fill()) if turns else None,
        # The disk's read rate while serving, where it was throttled (--serve-read-mbps).
        "serve_read_bps": serve_read_bps,
        "cap": None,
        "cap_search": None,
        "cap_range": None,
        "plan_check": None,
    }
    if judged:
        # Caps are judged for a server that has answered a long prompt: each capped start
        # answers short prompts under (cap - fill), the fill being the anonymous memory a
        # ubatch-filling prompt adds (measured above; anonymous memory has no other place to
        # go, so it adds to a cap one for one). The starts stay short and fast.
        fill = ref.fill_anon_bytes
        # Above the uncapped resident peak a cap never bites; the search grows it if it does.
        hi = int(ref.peaks.hwm * 1.05) + 16 * MIB if ceiling_bytes is None else ceiling_bytes
        lo = int(ref.peaks.anon * 0.9) if floor_bytes is None else floor_bytes
        timeout = 60 + 2 * ref.seconds

        # The uncapped speed: the median answer of the runs no cap touched while serving.
        unpressed = [t for t in ref.tokens_per_s if t > 0]
        runs: list[dict[str, Any]] = []  # every capped start, in order, retries included

        def trial(cap: int) -> TrialOutcome:
            out = one_trial(cap - fill)
            if not out.ok and is_marginal(out.reason):
                again = one_trial(cap - fill)  # a near miss on speed: noise, or a real slowdown?
                out = again if again.ok or again.tokens_per_s > out.tokens_per_s else out
            return out

        def one_trial(cap: int) -> TrialOutcome:
            run = capped_run(
                model, path, s, cap, unpressed, threads=threads, n_predict=n_predict,
                timeout_s=timeout, serve_read_bps=serve_read_bps,
            )  # fmt: skip
            out = _outcome(run, full_speed(unpressed))
            print(
                f"    cap {(cap + fill) / MIB:8.0f} MiB (applied {cap / MIB:.0f}): "
                f"{'ok  ' if out.ok else 'FAIL'} {out.reason:<22} "
                f"{out.tokens_per_s:6.2f} tok/s (full {full_speed(unpressed):.2f}), cgroup peak "
                f"{out.cgroup_max_usage_bytes / MIB:.0f} MiB, failcnt {out.cgroup_failcnt} "
                f"({run.cgroup_failcnt_serving} serving)",
                flush=True,
            )
            runs.append(
                {"cap_mib": round((cap + fill) / MIB, 1), "applied_mib": round(cap / MIB, 1),
                 "ok": out.ok, "reason": out.reason,
                 "tokens_per_s": round(out.tokens_per_s, 2),
                 "failcnt_serving": run.cgroup_failcnt_serving,
                 "warmup_s": round(run.warmup_s, 1)}
            )  # fmt: skip
            return out

        if plan_caps:
            check = check_plan_as_cap(
                est.total_bytes, trial, floor_bytes=lo, resolution_bytes=resolution_for(hi)
            )
            found = check.search
            row["cap"] = None if found is None else found.cap_bytes
            # Judged on both ends of what the starts showed, a searched cap included.
            row["cap_range"] = list(check.bounds)
            row["plan_check"] = check.as_dict() | {
                "full_speed_tokens_per_s": full_speed(unpressed),
                "runs": runs,
            }
        else:
            search = bisect_cap(lo, hi, trial, resolution_bytes=resolution_for(hi))
            row["cap"] = search.cap_bytes
            row["cap_search"] = search.as_dict() | {
                "full_speed_tokens_per_s": full_speed(unpressed),
                "runs": runs,
            }
    return row | estimate_columns(row, est)


def estimate_columns(row: dict[str, Any], est: DeviceMemory) -> dict[str, Any]:
    """The estimate's columns of a row and its targets, against the row's measured columns
    (`*_real`, `cap`): what `measure` adds after measuring and `rescore` recomputes."""
    weights_est, weights_field = weights_as_logged(est)
    total_est = weights_est + est.kv_cache_bytes + est.compute_bytes + est.output_bytes
    check = check_targets(
        kv_logged=row["kv_real"],
        kv_est=est.kv_cache_bytes,
        weights_logged=row["weights_real"],
        weights_est=weights_est,
        total_est=est.total_bytes,
        cap_bytes=row.get("cap"),
        cap_range=_cap_range(row),
    )
    return {
        "weights_est": weights_est,
        "weights_est_field": weights_field,
        "kv_est": est.kv_cache_bytes,
        "compute_est": est.compute_bytes,
        "output_est": est.output_bytes,
        "total_est": total_est,
        "total_err_pct": 100.0 * (total_est - row["total_real"]) / row["total_real"],
        "host_total_est": est.total_bytes,
        "overhead_est": est.overhead_bytes,
        "kv_ok": check.kv_ok,
        "weights_ok": check.weights_ok,
        "total_ok": check.total_ok,
        "total_est_over_cap": None
        if check.total_over_cap is None
        else round(check.total_over_cap, 3),
    }


def bounds_of(plan_check: dict[str, Any]) -> list[int | None]:
    """PlanCapCheck.bounds from its JSON form (bytes): the largest cap that failed and the
    smallest that passed over every start the check recorded."""
    trials = [t for t in (plan_check.get("at_plan"), plan_check.get("below")) if t]
    trials += (plan_check.get("search") or {}).get("trials") or []
    lo, hi = bounds_of_trials([(t["cap_mib"], t["ok"]) for t in trials])
    return [round(lo * MIB), None if hi is None else round(hi * MIB)]


def _cap_range(row: dict[str, Any]) -> tuple[int, int | None] | None:
    rng = row.get("cap_range")
    if not rng:
        return None
    return (int(rng[0]), None if rng[1] is None else int(rng[1]))


def _cap_text(row: dict[str, Any]) -> str:
    """The cap column: the range the starts put it in ("(lo, hi]"), or a bisected cap."""
    rng = _cap_range(row)
    if rng is not None:
        hi = "?" if rng[1] is None else f"{rng[1] / MIB:.0f}"
        return f"({rng[0] / MIB:.0f}, {hi}]"
    return "-" if row.get("cap") is None else f"{row['cap'] / MIB:.0f}"


def _ratio_text(row: dict[str, Any], digits: int = 3) -> str:
    """plan / cap: one ratio for a bisected cap, the range it lies in for a cap range."""
    rng = _cap_range(row)
    if rng is None:
        ratio = row.get("total_est_over_cap")
        return "-" if ratio is None else f"{ratio:.{digits}f}"
    plan = row["host_total_est"]
    low = "<" + f"{plan / rng[0]:.2f}" if rng[1] is None else f"{plan / rng[1]:.2f}"
    high = "inf" if rng[0] <= 0 else f"{plan / rng[0]:.2f}"
    return low if rng[1] is None else f"{low}-{high}"


def _mib(x: int | None) -> str:
    return f"{'-':>8}" if x is None else f"{x / MIB:8.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The comparison, one line per setting (pairs: logged / estimated, MiB)."""
    hdr = (
        f"{'model':<14} {'ctx':>6} {'np':>2} {'kv':>5} {'fa':>3} {'ub':>4} {'mmap':>4} | "
        f"{'weights':>17} | {'KV':>17} | {'compute':>17} | {'buffers':>17} | {'err%':>6} | "
        f"{'RSS anon':>8} {'file':>8} | {'cap':>8} {'plan':>8} {'plan/cap':>8} | in"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ratio = _ratio_text(r)
        print(
            f"{r['model'][:14]:<14} {r['ctx']:>6} {r['slots']:>2} {r['kv_type']:>5} "
            f"{'on' if r['flash_attention'] else 'off':>3} {r['ubatch']:>4} "
            f"{'on' if r['mmap'] else 'off':>4} | "
            f"{_mib(r['weights_real'])} {_mib(r['weights_est'])} | "
            f"{_mib(r['kv_real'])} {_mib(r['kv_est'])} | "
            f"{_mib(r['compute_real'])} {_mib(r['compute_est'])} | "
            f"{_mib(r['total_real'])} {_mib(r['total_est'])} | {r['total_err_pct']:+6.2f} | "
            f"{_mib(r['rss_anon_peak'])} {_mib(r['rss_file_peak'])} | "
            f"{_cap_text(r):>8} {_mib(r['host_total_est'])} "
            f"{ratio:>8} | {'yes' if r['in_sample'] else 'no'}"
        )
    print("(pairs: logged by llama-server / estimated by deployer; plan = host total estimate)")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as the Markdown table of docs/fit.md (MiB; pairs are logged / estimated)."""

    def m(x: int | None) -> str:
        return "-" if x is None else f"{x / MIB:.1f}"

    lines = [
        "| model | in-sample | ctx | slots | KV | FA | ub | mmap | weights log / est | KV log / est "
        "| compute log / est | RSS anon / file peak | cap | plan | plan / cap | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = r["kv_ok"] and r["weights_ok"] and r["total_ok"] is not False
        lines.append(
            f"| {r['model']} | {'yes' if r['in_sample'] else 'no'} | {r['ctx']} | {r['slots']} "
            f"| {r['kv_type']} | {'on' if r['flash_attention'] else 'off'} "
            f"| {r['ubatch']} | {'on' if r['mmap'] else 'off'} "
            f"| {m(r['weights_real'])} / {m(r['weights_est'])} | {m(r['kv_real'])} / {m(r['kv_est'])} "
            f"| {m(r['compute_real'])} / {m(r['compute_est'])} "
            f"| {m(r['rss_anon_peak'])} / {m(r['rss_file_peak'])} | {_cap_text(r)} "
            f"| {m(r['host_total_est'])} | {_ratio_text(r, 2)} "
            f"| {'met' if met else 'MISSED'} |"
        )
    return "\n".join(lines)


def _verdict(row: dict[str, Any]) -> str:
    """The host-total target in a word: inside, under, over, or undecided by the starts."""
    if row["total_ok"] is True:
        return "inside"
    if row["total_ok"] is None:
        return "undecided"
    rng = _cap_range(row)
    return "UNDER" if rng is not None and row["host_total_est"] <= rng[0] else "OVER"


def plan_caps_table(rows: list[dict[str, Any]]) -> str:
    """The rows judged by --plan-caps as the compact Markdown table of docs/fit.md: the plan,
    what its two trials came to, and the verdict."""

    def trial(t: dict[str, Any] | None, full: float, runs: list[dict[str, Any]]) -> str:
        if t is None:
            return "-"
        speed = f"{t['tokens_per_s'] / full:.2f}x" if full > 0 and t["tokens_per_s"] else ""
        why = "full speed" if t["ok"] else t["reason"]
        text = f"{t['cap_mib']:.0f}: {why}" + (f" ({speed})" if speed and t["ok"] else "")
        at = [x for x in runs if x["cap_mib"] == t["cap_mib"]]
        if len(at) > 1:  # retried: say how many starts there were and how many held
            text += f", {sum(1 for x in at if x['ok'])} of {len(at)} starts"
        return text

    lines = [
        "| model | ctx | slots | KV | FA | load | RSS anon / file peak | plan | at the plan "
        "| at the plan / 1.10 | cap in | plan / cap | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pc = r.get("plan_check")
        if not pc:
            continue
        full = float(pc.get("full_speed_tokens_per_s") or 0.0)
        runs = pc.get("runs") or []
        name = r["model"] + (" (in-sample)" if r["in_sample"] else "")
        lines.append(
            f"| {name} | {r['ctx']} | {r['slots']} | {r['kv_type']} "
            f"| {'on' if r['flash_attention'] else 'off'} | {'mmap' if r['mmap'] else 'none'} "
            f"| {r['rss_anon_peak'] / MIB:.0f} / {r['rss_file_peak'] / MIB:.0f} "
            f"| {r['host_total_est'] / MIB:.1f} | {trial(pc['at_plan'], full, runs)} "
            f"| {trial(pc['below'], full, runs)} | {_cap_text(r)} | {_ratio_text(r, 2)} "
            f"| {_verdict(r)} |"
        )
    return "\n".join(lines)


def summarize(
    rows: list[dict[str, Any]], seconds: float, not_judged: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Worst errors over all rows and whether every target was met."""
    if not rows:  # every setting failed uncapped: nothing was measured
        return {"settings": 0, "models": [], "settings_off_target": 0,
                "settings_not_judged": len(not_judged or []), "seconds": round(seconds, 1)}  # fmt: skip
    errs = [r["total_err_pct"] for r in rows]
    w_max = max(abs(r["weights_est"] - r["weights_real"]) / r["weights_real"] for r in rows)
    kv_max = max(abs(r["kv_est"] - r["kv_real"]) for r in rows) / MIB
    ratios = [r["total_est_over_cap"] for r in rows if r["total_est_over_cap"] is not None]
    median_err = statistics.median(abs(e) for e in errs)
    return {
        "settings": len(rows),
        "models": sorted({r["model"] for r in rows}),
        "weights_max_abs_err_mib": round(
            max(abs(r["weights_est"] - r["weights_real"]) for r in rows) / MIB, 3
        ),
        "weights_max_err_pct": round(100 * w_max, 3),
        "kv_max_abs_err_mib": round(kv_max, 3),
        "total_median_abs_err_pct": round(median_err, 3),
        "total_worst_under_pct": round(min(errs), 3),
        "caps_measured": len(ratios),
        "caps_ranged": sum(1 for r in rows if r.get("cap") is None and _cap_range(r)),
        "totals_undecided": sum(
            1 for r in rows if r["total_ok"] is None and (r.get("cap") or _cap_range(r))
        ),
        "plan_over_cap_min": round(min(ratios), 3) if ratios else None,
        "plan_over_cap_max": round(max(ratios), 3) if ratios else None,
        "settings_off_target": sum(
            1 for r in rows if not (r["kv_ok"] and r["weights_ok"] and r["total_ok"] is not False)
        ),
        "settings_not_judged": len(not_judged or []),
        "seconds": round(seconds, 1),
    }


def targets_met(summary: dict[str, Any]) -> bool:
    """Every setting judged, and each inside its targets (a run's and a merge's rule)."""
    return summary["settings_off_target"] == 0 and not summary["settings_not_judged"]


def _write(
    out: Path,
    models: list[tuple[str, Path]],
    threads: int,
    rows: list[dict[str, Any]],
    summary: dict[str, Any] | None,
    not_judged: list[dict[str, Any]] | None = None,
) -> None:
    """The JSON results (rewritten after every row, so a long run that stops keeps its rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "models": {name: str(path.name) for name, path in models},
        "llama_prefix": str(llama_prefix()),
        "machine": platform.platform(),
        "threads": threads,
        "read_ahead_kb": READ_AHEAD_KB,
        "rows": rows,
        "summary": summary,
    }
    if not_judged:
        doc["not_judged"] = not_judged
    write_doc(out, doc)


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    """Write a results file whole or not at all (a temporary file beside it, then a rename): a
    run, a merge or a rescore that stops midway leaves the previous file as it was."""
    text = json.dumps(doc, indent=2) + "\n"
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a write that failed midway (a full disk) leaves nothing


def rescore(doc: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Recompute every row's estimate columns with the current estimator, for the machine the
    file was measured on (its read_ahead_kb; 128 when it does not say). Measured columns are
    kept; the summary is recomputed (its seconds are the measuring run's)."""
    import dataclasses

    read_ahead = int(doc.get("read_ahead_kb") or 128)
    machine = dataclasses.replace(CPU_MACHINE, read_ahead_bytes=read_ahead * 1024)
    facts_of: dict[str, Any] = {}
    for row in doc["rows"]:
        name = row["model"]
        if name not in facts_of:
            facts_of[name] = facts_from_gguf(_build_sparse(name, work_dir))
        s = Setting(row["ctx"], row["slots"], row["kv_type"], row["flash_attention"],
                    row["ubatch"], row["mmap"])  # fmt: skip
        est = estimate_memory(facts_of[name], s.fit_settings(), machine).host
        if row.get("plan_check"):
            row["cap_range"] = bounds_of(row["plan_check"])
        row |= estimate_columns(row, est)
    seconds = float((doc.get("summary") or {}).get("seconds", 0.0))
    doc["summary"] = summarize(doc["rows"], seconds, doc.get("not_judged"))
    return doc


# What a results file's rows were measured with; a merge refuses files that differ in any.
_RUN_FIELDS = ("llama_prefix", "threads", "read_ahead_kb")


def merge_files(new: Path, into: Path, why: str | None) -> dict[str, Any]:
    """Add the rows of results file `new` to `into` (fit_truth.merge_rows), in place; return
    the recomputed summary. Each row records the model file it ran (`model_file`), since two
    runs of one model may have used different copies (a routed copy of a newer version)."""
    if new.resolve() == into.resolve():
        raise ValueError("a file cannot be merged into itself")
    old_doc, new_doc = json.loads(into.read_text()), json.loads(new.read_text())
    for field in _RUN_FIELDS:
        if old_doc.get(field) != new_doc.get(field):
            raise ValueError(
                f"the files were measured with different {field} ({old_doc.get(field)!r}, "
                f"{new_doc.get(field)!r})"
            )
    for d in (old_doc, new_doc):
        for row in d["rows"]:
            row.setdefault("model_file", d.get("models", {}).get(row["model"]))
    doc = merge_rows(old_doc, new_doc["rows"], why)
    doc["models"] = old_doc.get("models", {}) | new_doc.get("models", {})
    # settings a run could not judge: the newer word on each, and none that a row now judges
    judged = {row_key(r) for r in doc["rows"]}
    failed = {row_key(n): n for d in (old_doc, new_doc) for n in d.get("not_judged") or []}
    doc.pop("not_judged", None)
    if left := [n for k, n in failed.items() if k not in judged]:
        doc["not_judged"] = left
    # the rows keep the plan they were judged against (--rescore re-estimates them)
    seconds = sum(float((d.get("summary") or {}).get("seconds", 0.0)) for d in (old_doc, new_doc))
    doc["summary"] = summarize(doc["rows"], seconds, doc.get("not_judged"))
    doc["summary"]["targets_met"] = targets_met(doc["summary"])
    write_doc(into, doc)
    summary: dict[str, Any] = doc["summary"]
    return summary


def main() -> int:
    """Run the grid and print the comparison."""
    # A kill (SIGTERM) unwinds like Ctrl-C, so every trial's server and cgroup are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="one GGUF file instead of --models")
    ap.add_argument("--models", default=None, help="comma-separated names (default: demo)")
    ap.add_argument("--quick", action="store_true", help="CI: 8 demo settings, no cap search")
    ap.add_argument("--full", action="store_true", help="every setting of every shape model")
    ap.add_argument(
        "--settings", default=None, help="comma-separated indices into each model's grid"
    )
    ap.add_argument("--caps", action="store_true", help="search the full-speed cap (slow)")
    ap.add_argument(
        "--plan-caps",
        action="store_true",
        help="at every setting, try the plan as a cap (must pass) and the plan / 1.10 (must "
        "fail); search the cap only where one of them contradicts the target",
    )
    ap.add_argument(
        "--n-predict", type=int, default=32, help="tokens per timed completion (default 32)"
    )
    ap.add_argument("--threads", type=int, default=2, help="llama-server -t/-tb (default 2)")
    ap.add_argument(
        "--serve-read-mbps",
        type=float,
        default=None,
        help="throttle the server's reads from the model's disk to this many MB/s once it is "
        "healthy (cgroup v1 blkio): a slower disk, or a faster CPU beside the same disk",
    )
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/var/tmp/deployer-fitbench"),
        help="where shape GGUFs are built (a disk, not tmpfs: page cache must be real)",
    )
    ap.add_argument(
        "--render", type=Path, default=None, help="print a results file as Markdown and exit"
    )
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "fit_accuracy.json"
    )
    ap.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="recompute a results file's estimates with the current estimator (in place)",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="add a results file's rows to --into (a rerun, or settings measured apart); the "
        "rows keep the plan they were judged against",
    )
    ap.add_argument("--into", type=Path, default=None, help="the results file --merge adds to")
    ap.add_argument(
        "--why",
        default=None,
        help="with --merge: why its rows replace rows --into has for the same settings (kept "
        "in superseded_rows with this reason)",
    )
    ns = ap.parse_args()
    if ns.merge is None and (ns.into is not None or ns.why is not None):
        print("--into and --why go with --merge NEW", file=sys.stderr)
        return 2
    if ns.merge is not None:
        if ns.into is None:
            print("--merge needs --into FILE, the results file to add to", file=sys.stderr)
            return 2
        try:
            summary = merge_files(ns.merge, ns.into, ns.why)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"Cannot merge {ns.merge} into {ns.into}: {e}", file=sys.stderr)
            return 2
        print(json.dumps(summary))
        return 0
    if ns.rescore is not None:
        try:
            doc = rescore(json.loads(ns.rescore.read_text()), ns.work_dir)
            write_doc(ns.rescore, doc)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"Cannot rescore {ns.rescore}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        print_table(doc["rows"])
        print(json.dumps(doc["summary"]))
        return 0
    if ns.render is not None:
        try:
            rows = json.loads(ns.render.read_text())["rows"]
            if any(r.get("plan_check") for r in rows):
                print(plan_caps_table(rows))
            else:
                print(markdown_table(rows))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"Cannot render {ns.render}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        return 0
    if ns.threads < 1 or ns.n_predict < 1:
        print("--threads and --n-predict must be at least 1", file=sys.stderr)
        return 2
    # CI's quick run needs only the resident peaks of a short answer, not a timed decode.
    n_predict = 1 if ns.quick else ns.n_predict
    try:
        picks = None if ns.settings is None else [int(i) for i in ns.settings.split(",")]
    except ValueError:
        print(f"--settings takes grid indices such as 0,1: got {ns.settings!r}", file=sys.stderr)
        return 2
    if ns.caps and ns.plan_caps:
        print("--caps and --plan-caps are two ways to judge the total: pick one", file=sys.stderr)
        return 2
    if (ns.caps or ns.plan_caps) and not cgroup_available():
        print(
            "--caps and --plan-caps need root and a memory cgroup: v1 at "
            "/sys/fs/cgroup/memory, or v2 at /sys/fs/cgroup with its memory controller",
            file=sys.stderr,
        )
        return 3
    if ns.serve_read_mbps is not None and (
        ns.serve_read_mbps <= 0 or not (CGROUP_V1_BLKIO / "cgroup.procs").exists()
    ):
        print(
            "--serve-read-mbps takes a positive rate and needs root and cgroup v1's blkio "
            "hierarchy at /sys/fs/cgroup/blkio",
            file=sys.stderr,
        )
        return 3
    if ns.model is not None:
        if not ns.model.is_file():
            print(f"No such model file: {ns.model}", file=sys.stderr)
            return 2
        models = [(ns.model.stem, ns.model)]
    else:
        names = [n.strip() for n in (ns.models or "demo").split(",") if n.strip()]
        known = available_models() if ns.models == "all" else None
        names = known or names
        unknown = [n for n in names if n not in available_models() + bpe_models()]
        if unknown or not names:
            choices = ", ".join(available_models() + bpe_models())
            print(
                f"Unknown model {unknown[0] if unknown else ''!r}: choose from {choices}, all",
                file=sys.stderr,
            )
            return 2
        models = [(n, build_model(n, ns.work_dir, dense=ns.caps or ns.plan_caps)) for n in names]
    if ns.serve_read_mbps is not None:
        unthrottled = [name for name, path in models if read_throttle_device(path) is None]
        if unthrottled:
            print(
                f"--serve-read-mbps: {unthrottled[0]}'s file system has no block device of its "
                "own to throttle: use --work-dir on a plain disk",
                file=sys.stderr,
            )
            return 3
    rows = []
    t0 = time.monotonic()
    # A setting whose uncapped start fails (a trial past its time bound, a file the server
    # rejects) is recorded and skipped: the run goes on to the next, and ends non-zero.
    not_judged: list[dict[str, Any]] = []
    for name, path in models:
        if name == "demo":
            grid = [DEMO_GRID[i] for i in QUICK] if ns.quick else DEMO_GRID
        else:
            grid = SHAPE_GRID if ns.full else SHAPE_GRID[:SHAPE_DEFAULT]
        if picks is not None:
            full = DEMO_GRID if name == "demo" else SHAPE_GRID
            grid = [full[i] for i in picks if 0 <= i < len(full)]
        for s in grid:
            print(f"  {name} {s}", flush=True)
            try:
                row = measure(
                    name,
                    path,
                    s,
                    threads=ns.threads,
                    caps=ns.caps,
                    n_predict=n_predict,
                    plan_caps=ns.plan_caps,
                    serve_read_bps=None
                    if ns.serve_read_mbps is None
                    else int(ns.serve_read_mbps * 1e6),
                )
            except UncappedFailure as e:
                print(f"    not judged: {e}\n{e.log[-2000:]}", file=sys.stderr, flush=True)
                not_judged.append(
                    {"model": name, "ctx": s.ctx, "slots": s.slots, "kv_type": s.kv,
                     "flash_attention": s.fa, "ubatch": s.ub, "mmap": s.mmap,
                     "reason": str(e)}
                )  # fmt: skip
            else:
                rows.append(row)
            _write(ns.out, models, ns.threads, rows, None, not_judged)
    seconds = time.monotonic() - t0
    print_table(rows)
    summary = summarize(rows, seconds, not_judged)
    old_targets = bool(rows) and (
        summary["total_median_abs_err_pct"] <= 3 and summary["total_worst_under_pct"] >= -2
    )
    summary["targets_met"] = targets_met(summary) and (old_targets or not ns.quick)
    print(json.dumps(summary))
    _write(ns.out, models, ns.threads, rows, summary, not_judged)
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
