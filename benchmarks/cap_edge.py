"""How sharp is a full-speed cap? Repeat capped starts at fixed caps and record what each held.

`fit_accuracy.py --caps` bisects one cap per setting from one trial per step; near the edge a
mapped model either holds its hot pages or collapses into re-reading them, and one trial cannot
tell an edge from noise. This runs every cap in `--caps-mib` `--repeat` times (interleaved, so
drift hits every cap alike) after one uncapped reference, and records per trial: the verdict
(fit_accuracy's rules: within 10% of the best uncapped speed, or the cap never hit while
serving), tokens/s, and the cgroup's memory.stat while the server was still up (anonymous
`rss`, `mapped_file`, `active_file`/`inactive_file`, `pgmajfault`).

    python benchmarks/cap_edge.py --model llama3.1-8b-q4_k_m --setting 4 \
        --caps-mib 5918,5976,6020,6107 --repeat 3

Its caps are the caps the server ran under with short prompts: unlike fit_accuracy.py's, no
long prompt's anonymous memory (`fill`) is added, so they read lower than caps judged for a
server that has answered a long prompt.

Needs root and a cgroup v1 memory hierarchy, like `fit_accuracy.py --caps`. Results go to
benchmarks/results/cap_edge.json (appended per model and setting).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _llama import cgroup_available, run_trial
from fit_accuracy import CPU_MACHINE, SHAPE_GRID, _is_moe, build_model, capped_run, full_speed
from fit_truth import judge_trial

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.adapters.system_probe import disk_read_ahead
from deployer.core.fit.memory import estimate_memory
from deployer.core.hardware.detect import parse_read_ahead
from deployer.core.units import MIB

STAT_KEYS = ("rss", "mapped_file", "cache", "active_file", "inactive_file", "pgmajfault")
# cgroup v2's memory.stat names for v1's rss, mapped_file and cache
V2_STAT_KEYS = {"anon": "rss", "file_mapped": "mapped_file", "file": "cache"}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a name from benchmarks/shapes.py")
    ap.add_argument("--setting", type=int, required=True, help="index into fit_accuracy's grid")
    ap.add_argument("--caps-mib", required=True, help="comma-separated caps in MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-predict", type=int, default=16)
    ap.add_argument("--work-dir", type=Path, default=Path("/var/tmp/deployer-fitbench"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cap_edge.json")
    ns = ap.parse_args()
    if not cgroup_available():
        print(
            "needs root and a memory cgroup (v1, or v2 with its memory controller)", file=sys.stderr
        )
        return 3
    caps = [float(c) for c in ns.caps_mib.split(",")]
    s = SHAPE_GRID[ns.setting]
    path = build_model(ns.model, ns.work_dir, dense=True)

    plan = estimate_memory(facts_from_gguf(path), s.fit_settings(), CPU_MACHINE).host.total_bytes
    # CPU_MACHINE carries this machine's read-around (fit_accuracy.READ_AHEAD_KB)
    ref = run_trial(
        path, s.args(ns.threads), completions=3, n_predict=ns.n_predict, timeout_s=600,
        sample=_is_moe(ns.model),  # a routed MoE shape samples its tokens (fit_accuracy.py)
    )  # fmt: skip
    if ref.error:
        print(f"uncapped run failed: {ref.error}", file=sys.stderr)
        return 1
    unpressed = [t for t in ref.tokens_per_s if t > 0]
    full = full_speed(unpressed)
    print(f"{ns.model} {s}: plan {plan / MIB:.1f} MiB, uncapped {ref.tokens_per_s} tok/s, "
          f"anon peak {ref.peaks.anon / MIB:.1f} MiB", flush=True)  # fmt: skip
    trials: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for rep in range(ns.repeat):
        for cap in caps:
            run = capped_run(
                ns.model, path, s, int(cap * MIB), unpressed, threads=ns.threads,
                n_predict=ns.n_predict, timeout_s=60 + 2 * ref.seconds,
            )  # fmt: skip
            full = full_speed(unpressed)
            reason = judge_trial(run.error, run.tokens_per_s, full, run.cgroup_failcnt_serving)
            raw = run.cgroup_stat | {
                v1: run.cgroup_stat[v2] for v2, v1 in V2_STAT_KEYS.items() if v2 in run.cgroup_stat
            }
            stat = {k: raw.get(k, 0) for k in STAT_KEYS}
            trials.append(
                {"cap_mib": cap, "repeat": rep, "ok": not reason, "reason": reason,
                 "tokens_per_s": run.tokens_per_s, "failcnt_serving": run.cgroup_failcnt_serving,
                 "stat": stat}
            )  # fmt: skip
            print(
                f"  rep {rep} cap {cap:7.0f}: {'ok  ' if not reason else 'FAIL'} {reason:<24} "
                f"{max(run.tokens_per_s, default=0):5.2f} tok/s  anon {stat['rss'] / MIB:7.1f} "
                f"mapped {stat['mapped_file'] / MIB:7.1f} act/inact file "
                f"{stat['active_file'] / MIB:6.1f}/{stat['inactive_file'] / MIB:6.1f} "
                f"majflt {stat['pgmajfault']}",
                flush=True,
            )
    doc: dict[str, Any] = json.loads(ns.out.read_text()) if ns.out.exists() else {"runs": []}
    doc["runs"].append(
        {"model": ns.model, "setting": str(s), "plan_mib": round(plan / MIB, 1),
         "uncapped_tokens_per_s": ref.tokens_per_s, "full_speed": full,
         "anon_peak_mib": round(ref.peaks.anon / MIB, 1), "trials": trials,
         "read_ahead_kb": parse_read_ahead(disk_read_ahead()),
         "seconds": round(time.monotonic() - t0)}
    )  # fmt: skip
    ns.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
