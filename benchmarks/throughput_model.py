"""Throughput model: predicted vs measured aggregate tok/s and TTFT, the demo at 1-8 slots.

For each slot count N, the demo is planned on this machine's profile (detected, or --profile)
at N slots, llama-server is started natively with the arguments `deploy` renders for that plan,
and `deployer bench`'s own load generator keeps N streams busy (closed loop, synthetic prompts
of --prompt-tokens, answers of --output-tokens at full length). Beside each measurement:

- the prediction at the default efficiencies (what `plan` says on a machine never benched);
- the prediction calibrated the way `bench` calibrates: efficiencies fitted on the 1-slot run
  (its decode and prefill speeds), then used for every N. N=1 is in-sample for the calibrated
  prediction; N=2, 4, 8 are not.

Compared figure: delivered output tok/s (output tokens over the level's wall time, prefills
included) against the model's requests/s x output tokens. Targets (issue 11): within 25% at
the defaults, within 10% calibrated. TTFT (median) is shown beside the model's burst TTFT (a
closed loop of equal requests stays in step: every level's streams send together), without a
target.

    python benchmarks/throughput_model.py [--slots 1,2,4,8] [--profile ID] [--requests-per-slot 3]
                                          [--repeats 2]

Prints a table and writes benchmarks/results/throughput_model.json. Exit 1 when a target is
missed. Run it on a quiet machine: other load on the same cores is measured as the server's.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix, server_log, stop, wait_healthy

from deployer.adapters.loadgen import HttpLoadRunner
from deployer.adapters.local_models import demo_model_path
from deployer.cli import wiring
from deployer.core.bench.policy import LatencyTarget
from deployer.core.bench.predict import Predictor
from deployer.core.bench.shapes import RequestShape
from deployer.core.bench.stats import LevelStats
from deployer.core.bench.sweep import SweepSpec, Target, run_sweep
from deployer.core.fit.calibration import Calibration, CalibrationKey
from deployer.core.fit.throughput import LoadPrediction
from deployer.core.hardware.profiles import Profile
from deployer.core.serve.llama_flags import PINNED_BUILD
from deployer.core.serve.render import llama_server_args

RESULTS = Path(__file__).resolve().parent / "results" / "throughput_model.json"
CTX_PER_SLOT = 1024
DEFAULT_TARGET = 0.25
CALIBRATED_TARGET = 0.10


def _plan(profile: Profile, slots: int) -> Any:
    return wiring.plan_for("demo", profile, quant=None, ctx=slots * CTX_PER_SLOT,
                           parallel=slots, kv_type="f16", backend="llamacpp")  # fmt: skip


def measure(profile: Profile, slots: int, shape: RequestShape, requests: int) -> LevelStats:
    """Serve the demo at `slots` as deploy would, and keep `slots` streams busy."""
    plan = _plan(profile, slots)
    port = free_port()
    args = llama_server_args(plan, build=PINNED_BUILD, model_arg=str(demo_model_path()),
                             host="127.0.0.1", port=port, api_key_file=None)  # fmt: skip
    binary = llama_prefix() / "bin" / "llama-server"
    with server_log() as log:
        proc = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
        try:
            wait_healthy(port, proc)
            target = Target("demo", f"http://127.0.0.1:{port}", "demo", None, "llamacpp",
                            False, slots, CTX_PER_SLOT, profile.id, None)  # fmt: skip
            runner = HttpLoadRunner(target.endpoint, model="demo", api_key=None, timeout_s=300)
            spec = SweepSpec([slots], requests, shape, LatencyTarget(None, None, None), 300)
            result = run_sweep(target, spec, runner, measured_at="", predictor=None)
        finally:
            stop(proc)
    (level,) = result.levels
    if level.completed < level.requests:
        raise RuntimeError(f"{slots} slot(s): {level.errors}")
    return level


def _predictor(profile: Profile, slots: int, shape: RequestShape, cal: Calibration | None) -> Any:
    plan = _plan(profile, slots)
    key = CalibrationKey(profile.id, plan.model, plan.chosen.facts.quant, "llamacpp")
    return Predictor(plan.chosen, profile, key=key, calibration=cal,
                     prompt_tokens=shape.prompt_tokens, output_tokens=shape.output_tokens)  # fmt: skip


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def delivered(p: LoadPrediction, output_tokens: int) -> float:
    """Output tokens/s a closed loop of p.slots streams delivers, prefills included."""
    return p.requests_per_s * output_tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", default="1,2,4,8")
    ap.add_argument("--profile", default=None, help="profile id (default: this machine, detected)")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--requests-per-slot", type=int, default=3)
    ap.add_argument(
        "--repeats", type=int, default=2, help="runs per slot count; the fastest is kept"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    wiring.install_data_source()
    slot_counts = [int(x) for x in a.slots.split(",")]
    if slot_counts[0] != 1:
        ap.error("--slots must start at 1: the calibration is fitted there")
    profile = wiring.pick_profile(a.profile, a.profile is None)
    shape = RequestShape(a.prompt_tokens, a.output_tokens)

    levels: dict[int, LevelStats] = {}
    for n in slot_counts:
        runs = []
        for i in range(a.repeats):
            print(f"measuring {n} slot(s), run {i + 1} of {a.repeats} ...", flush=True)
            runs.append(measure(profile, n, shape, max(a.requests_per_slot * n, 4)))
        # The fastest run: other work on the same cores only ever slows a run down.
        levels[n] = max(runs, key=lambda lv: lv.aggregate_tokens_per_s)
    fit = _predictor(profile, 1, shape, None).fit(levels[1], measured_on="", deployment="bench")
    cal = fit.calibration

    rows: list[dict[str, Any]] = []
    ok = True
    for n in slot_counts:
        lv = levels[n]
        base = _predictor(profile, n, shape, None).at(n)
        calib = _predictor(profile, n, shape, cal).at(n) if cal is not None else None
        measured = lv.aggregate_tokens_per_s
        row: dict[str, Any] = {
            "slots": n,
            "measured_tokens_per_s": round(measured, 2),
            "measured_ttft_p50_s": None if lv.ttft.p50 is None else round(lv.ttft.p50, 3),
            "measured_stream_tokens_per_s": _r(lv.server_stream_tokens_per_s),
            "measured_prefill_tokens_per_s": _r(lv.prefill_tokens_per_s),
            "measured_prompt_tokens": lv.prompt_tokens,
            "requests": lv.requests,
            "default_tokens_per_s": round(delivered(base, a.output_tokens), 2),
            "default_ratio": round(delivered(base, a.output_tokens) / measured, 3),
            "default_ttft_s": round(base.ttft_burst_s, 3),
            "default_compute_bound": base.compute_bound,
            "calibrated_tokens_per_s": None,
            "calibrated_ratio": None,
            "calibrated_ttft_s": None,
            "calibrated_in_sample": n == 1,
        }
        row["default_met"] = abs(row["default_ratio"] - 1) <= DEFAULT_TARGET
        if calib is not None:
            row["calibrated_tokens_per_s"] = round(delivered(calib, a.output_tokens), 2)
            row["calibrated_ratio"] = round(delivered(calib, a.output_tokens) / measured, 3)
            row["calibrated_ttft_s"] = round(calib.ttft_burst_s, 3)
        row["calibrated_met"] = (
            row["calibrated_ratio"] is not None
            and abs(row["calibrated_ratio"] - 1) <= CALIBRATED_TARGET
        )
        ok = ok and row["default_met"] and row["calibrated_met"]
        rows.append(row)

    print(f"\nprofile {profile.id}; {a.prompt_tokens} + {a.output_tokens} tokens a request; "
          f"calibration: {fit.note}")  # fmt: skip
    if cal is not None:
        print(f"fitted on 1 slot: memory efficiency {cal.memory_efficiency:.3f}, "
              f"compute efficiency {cal.compute_efficiency:.3f}")  # fmt: skip
    head = ("slots", "measured", "default", "ratio", "calibrated", "ratio", "TTFT meas",
            "TTFT def", "TTFT cal")  # fmt: skip
    print("".join(f"{h:>11}" for h in head))
    for r in rows:
        cells = (r["slots"], r["measured_tokens_per_s"], r["default_tokens_per_s"],
                 r["default_ratio"], r["calibrated_tokens_per_s"], r["calibrated_ratio"],
                 r["measured_ttft_p50_s"], r["default_ttft_s"], r["calibrated_ttft_s"])  # fmt: skip
        print("".join(f"{'-' if c is None else c:>11}" for c in cells))
    print(f"targets: default within {DEFAULT_TARGET:.0%}, calibrated within "
          f"{CALIBRATED_TARGET:.0%} (1 slot is in-sample for calibrated): "
          f"{'met' if ok else 'MISSED'}")  # fmt: skip

    doc = {
        "benchmark": "throughput_model",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "profile": profile.id},
        "model": "demo",
        "prompt_tokens": a.prompt_tokens,
        "output_tokens": a.output_tokens,
        "ctx_per_slot": CTX_PER_SLOT,
        "calibration": None
        if cal is None
        else {
            "memory_efficiency": cal.memory_efficiency,
            "compute_efficiency": cal.compute_efficiency,
            "fitted_on_slots": 1,
        },
        "calibration_note": fit.note,
        "targets": {"default_within": DEFAULT_TARGET, "calibrated_within": CALIBRATED_TARGET},
        "rows": rows,
        "met": ok,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
