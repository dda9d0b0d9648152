"""The compute buffer at many slots, on the real-shaped files of benchmarks/shapes.py: the
worst-case graph llama.cpp reserves holds every slot at once (a recurrent layer's states grow
with them), so the plan's compute buffer is checked against llama-server's log at 16 and 32
slots, with and without flash attention.

    python benchmarks/compute_slots.py [--models a,b] [--work-dir DIR]

Prints logged / planned MiB per file and setting and writes
benchmarks/results/compute_slots.json; exit 1 when the plan is under the log anywhere.
Needs the llama-server of scripts/build-llama.sh (or DEPLOYER_LLAMA_PREFIX) and the shape files
(built on a miss, weights sparse; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _llama import run_server  # noqa: E402
from fit_accuracy import build_model  # noqa: E402

from deployer.adapters.gguf_files import facts_from_gguf  # noqa: E402
from deployer.core.fit.llamalog import parse_buffers  # noqa: E402
from deployer.core.fit.memory import FitSettings, compute_bytes  # noqa: E402
from deployer.core.units import MIB  # noqa: E402

MODELS = [
    "llama3.1-8b-q4_k_m", "gemma2-2b-q4_k_m", "gemma3-1b-q4_k_m", "phi3-mini-4k-q4_k_m",
    "olmoe-1b-7b-q4_k_m", "qwen3-30b-a3b-q4_k_m", "deepseek-v2-lite-q4_k_m", "qwen3.5-9b-q4_k_m",
]  # fmt: skip
SETTINGS = [(16384, 16, True), (8192, 16, False), (32768, 32, True)]
OUT = REPO / "benchmarks" / "results" / "compute_slots.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work-dir", default="/var/tmp/deployer-fitbench")
    ns = ap.parse_args()
    rows = []
    for name in ns.models.split(","):
        path = build_model(name, Path(ns.work_dir))
        arch = facts_from_gguf(path).arch
        for ctx, slots, fa in SETTINGS:
            args = ["-c", str(ctx), "-np", str(slots), "-fa", "on" if fa else "off",
                    "--fit", "off", "-t", "2"]  # fmt: skip
            log = parse_buffers(
                run_server(path, args, timeout_s=300).log.split("loaded meta data")[-1]
            )
            logged = log.get("host", "compute")
            plan = compute_bytes(arch, FitSettings(ctx=ctx, parallel=slots, flash_attention=fa))
            rows.append({"model": name, "ctx": ctx, "slots": slots, "flash_attention": fa,
                         "compute_log_mib": round(logged / MIB, 2),
                         "compute_plan_mib": round(plan / MIB, 2), "under": plan < logged})  # fmt: skip
            print(f"{name} {ctx} x {slots} fa {'on' if fa else 'off'}: compute "
                  f"{logged / MIB:.2f} / {plan / MIB:.2f} ({(plan - logged) / MIB:+.2f})", flush=True)  # fmt: skip
    doc = {
        "benchmark": "compute_slots",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if any(r["under"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
