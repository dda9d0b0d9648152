"""Fit accuracy: deployer's memory estimate vs the buffers a real llama-server allocates.

Runs llama-server (scripts/build-llama.sh, cached) on the demo model over a grid of settings
(context 512..32768, 1 and 4 slots, KV f16/q8_0/q4_0, flash attention on/off), parses the
`... buffer size = X MiB` lines it logs, and compares each component with the estimate.

    python benchmarks/fit_accuracy.py [--model PATH] [--quick]

Prints a table and writes benchmarks/results/fit_accuracy.json.
Targets: weights and KV within 1 MiB; total within 3% median and never more than 2% under.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import llama_prefix, run_server

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.adapters.local_models import demo_model_path
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import FitSettings, MachineSpec, estimate_memory
from deployer.core.units import GIB, MIB

# (ctx, slots, kv type, flash attention, ubatch)
GRID: list[tuple[int, int, str, bool, int]] = [
    (512, 1, "f16", True, 512),
    (2048, 1, "f16", True, 512),
    (4096, 1, "f16", True, 512),
    (8192, 1, "f16", True, 512),
    (32768, 1, "f16", True, 512),
    (4096, 1, "f16", False, 512),
    (16384, 1, "f16", False, 512),
    (8192, 1, "q8_0", True, 512),
    (8192, 1, "q4_0", True, 512),
    (32768, 1, "q8_0", True, 512),
    (16384, 4, "f16", True, 512),
    (16384, 4, "f16", False, 512),
    (32768, 4, "q4_0", True, 512),
    (4096, 4, "q8_0", True, 512),
    (4096, 1, "f16", True, 128),
    (4096, 1, "f16", False, 2048),
]
QUICK = [0, 3, 5, 7, 8, 10, 12, 14]


def _args(ctx: int, slots: int, kv: str, fa: bool, ub: int) -> list[str]:
    args = [
        "-c",
        str(ctx),
        "-np",
        str(slots),
        "-fa",
        "on" if fa else "off",
        "--fit",
        "off",
        "-ub",
        str(ub),
        "-b",
        str(max(ub, 2048)),
        "-ctk",
        kv,
    ]
    # A quantized V cache needs flash attention; without it only K is quantized.
    args += ["-ctv", kv if fa else "f16"]
    return args


def main() -> int:
    """Run the grid and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="8 settings instead of 16")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "fit_accuracy.json"
    )
    ns = ap.parse_args()
    model = ns.model or demo_model_path()
    facts = facts_from_gguf(model)
    machine = MachineSpec(
        kind="cpu",
        device_count=0,
        device_budget_bytes=0,
        device_overhead_bytes=0,
        host_budget_bytes=64 * GIB,
    )
    grid = [GRID[i] for i in QUICK] if ns.quick else GRID
    rows = []
    t0 = time.monotonic()
    for ctx, slots, kv, fa, ub in grid:
        run = run_server(model, _args(ctx, slots, kv, fa, ub))
        logged = parse_buffers(run.log.split("loaded meta data")[-1])
        s = FitSettings(
            ctx=ctx,
            parallel=slots,
            kv_type_k=kv,
            kv_type_v=kv if fa else "f16",
            flash_attention=fa,
            n_ubatch=ub,
        )
        est = estimate_memory(facts, s, machine).host
        real = {c: logged.get("host", c) for c in ("model", "KV", "compute", "output")}
        real_total = sum(real.values())
        est_total = est.logged_buffers_bytes  # the log's view: mapping + repacked copies
        rows.append(
            {
                "ctx": ctx,
                "slots": slots,
                "kv_type": kv,
                "flash_attention": fa,
                "ubatch": ub,
                "weights_real": real["model"],
                "weights_est": est.logged_weights_bytes,
                "kv_real": real["KV"],
                "kv_est": est.kv_cache_bytes,
                "compute_real": real["compute"],
                "compute_est": est.compute_bytes,
                "output_real": real["output"],
                "output_est": est.output_bytes,
                "total_real": real_total,
                "total_est": est_total,
                "total_err_pct": 100.0 * (est_total - real_total) / real_total,
                "rss_bytes": run.rss_bytes,
                "overhead_est": est.overhead_bytes,
            }
        )
    seconds = time.monotonic() - t0

    def mib(x: int) -> str:
        return f"{x / MIB:8.2f}"

    hdr = (
        f"{'ctx':>6} {'np':>2} {'kv':>5} {'fa':>3} {'ub':>4} | {'weights':>17} | {'KV':>17} | "
        f"{'compute':>17} | {'total (MiB)':>17} | {'err%':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['ctx']:>6} {r['slots']:>2} {r['kv_type']:>5} {'on' if r['flash_attention'] else 'off':>3} "
            f"{r['ubatch']:>4} | {mib(r['weights_real'])} {mib(r['weights_est'])} | "
            f"{mib(r['kv_real'])} {mib(r['kv_est'])} | {mib(r['compute_real'])} {mib(r['compute_est'])} | "
            f"{mib(r['total_real'])} {mib(r['total_est'])} | {r['total_err_pct']:+6.2f}"
        )
    errs = [r["total_err_pct"] for r in rows]
    w_max = max(abs(r["weights_est"] - r["weights_real"]) for r in rows) / MIB
    kv_max = max(abs(r["kv_est"] - r["kv_real"]) for r in rows) / MIB
    summary = {
        "settings": len(rows),
        "weights_max_abs_err_mib": round(w_max, 3),
        "kv_max_abs_err_mib": round(kv_max, 3),
        "total_median_abs_err_pct": round(statistics.median(abs(e) for e in errs), 3),
        "total_worst_under_pct": round(min(errs), 3),
        "targets_met": w_max <= 1
        and kv_max <= 1
        and statistics.median(abs(e) for e in errs) <= 3
        and min(errs) >= -2,
        "seconds": round(seconds, 1),
    }
    print("(each pair: logged by llama-server, estimated by deployer)")
    print(json.dumps(summary))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(
        json.dumps(
            {
                "model": str(model.name),
                "llama_prefix": str(llama_prefix()),
                "machine": platform.platform(),
                "rows": rows,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
