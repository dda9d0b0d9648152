"""What the llama-server process holds beyond its buffers, once a prompt has filled a ubatch.

For each model: one uncapped start with the weights loaded (`--load-mode none`, so every weight
is anonymous memory and nothing is file-backed but the binary and its libraries), the host
prompt cache off (`--cache-ram 0`, as deployer renders it), a short answer, then one prompt of
n_ubatch + 8 tokens (it touches the whole compute buffer and the slot's per-prompt state, as a
user's long prompt does). RssAnon after it, less the buffers llama-server logged (weights, KV,
compute, output), is the process's own anonymous memory; RssFile is its binary and libraries.
Both are set against the plan's host overhead (deployer/core/fit/memory.py).

    python benchmarks/host_overhead.py [--models demo,llama3.2-1b-q4_k_m,...] [--out FILE]
    python benchmarks/host_overhead.py --bpe [--models ...]

Results go to benchmarks/results/host_overhead.json. Needs the llama-server of
scripts/build-llama.sh and the shape files of benchmarks/shapes.py (written out dense).

The shapes carry a placeholder SentencePiece vocabulary of the real size. `--bpe` measures what
a real byte-level BPE tokenizer adds (its merge table: 50k-280k rules, each a pair of strings in
llama.cpp's hash table): for each model whose real tokenizer is BPE, the placeholder file and
its `.bpe` sibling (the real tokenizer's kind, pre-tokenizer and merge count) back to back, both
sparse (loaded weights are anonymous memory either way). Results go to
benchmarks/results/host_overhead_bpe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import run_trial
from fit_accuracy import CPU_MACHINE, DEMO_GRID, SHAPE_GRID, Setting, _is_moe, build_model

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import estimate_memory, host_overhead_bytes
from deployer.core.model.facts import ModelFacts
from deployer.core.units import MIB

BPE_MODELS = "llama3.2-1b-q4_k_m,qwen2.5-3b-q4_k_m,olmoe-1b-7b-q4_k_m"
DEFAULT_MODELS = (
    "demo,phi3-mini-4k-q4_k_m,mistral-7b-v0.3-q4_k_m,olmoe-1b-7b-q4_k_m,llama3.2-1b-q4_k_m,"
    "llama3.2-3b-q4_k_m,qwen2.5-3b-q4_k_m,qwen3-4b-q4_k_m,gemma2-2b-q4_k_m,gemma3-1b-q4_k_m"
)


def measure(name: str, work_dir: Path, threads: int, bpe: bool | None = None) -> dict[str, Any]:
    """One model's row: anonymous memory beyond the logged buffers after a long prompt. `bpe`
    None: the dense placeholder-vocabulary file; False/True: the sparse placeholder or BPE one."""
    if bpe is None:
        path = build_model(name, work_dir, dense=True)
    else:
        import shapes

        path = Path(shapes.build(name, work_dir, bpe=bpe))
    s = _setting(name)
    t0 = time.monotonic()
    run = run_trial(
        path, s.args(threads), completions=1, n_predict=4, timeout_s=900,
        sample=_is_moe(name), fill_tokens=s.ub + 8,
    )  # fmt: skip
    if run.error:
        raise SystemExit(f"{name}: llama-server failed: {run.error}\n{run.log[-2000:]}")
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    buffers = logged.total("host")  # weights, KV, recurrent state, compute, output
    facts = facts_from_gguf(path)
    anon_long = run.anon_short_bytes + run.fill_anon_bytes
    return {
        "model": name,
        "tokenizer": "bpe" if bpe else "placeholder",
        "n_vocab": facts.arch.n_vocab,
        "n_merges": facts.arch.n_merges,
        "buffers_mib": round(buffers / MIB, 1),
        "anon_after_short_mib": round(run.anon_short_bytes / MIB, 1),
        "anon_after_long_mib": round(anon_long / MIB, 1),
        "anon_beyond_buffers_mib": round((anon_long - buffers) / MIB, 1),
        "file_peak_mib": round(run.peaks.file / MIB, 1),
        "needed_mib": round((anon_long + run.peaks.file) / MIB, 1),
        **plan_columns(facts, name),
        "seconds": round(time.monotonic() - t0, 1),
    }


def _setting(name: str) -> Setting:
    """ctx 4096, one slot, weights loaded (the demo's grid has it at index 16)."""
    return DEMO_GRID[16] if name == "demo" else SHAPE_GRID[1]


def plan_columns(facts: ModelFacts, name: str) -> dict[str, float]:
    """The current estimator's host overhead and host total for the measured file."""
    s = _setting(name)
    budget = host_overhead_bytes(facts.arch, CPU_MACHINE.cpu_threads)
    est = estimate_memory(facts, s.fit_settings(), CPU_MACHINE).host
    return {
        "overhead_budget_mib": round(budget / MIB, 1),
        "plan_mib": round(est.total_bytes / MIB, 1),
    }


def rescore(out: Path, work_dir: Path) -> None:
    """Recompute each row's plan columns with the current estimator (the header is all it
    reads: sparse files do), in place."""
    import shapes

    doc = json.loads(out.read_text())
    for row in doc["rows"]:
        bpe = row.get("tokenizer") == "bpe"
        if bpe:
            path = Path(shapes.build(row["model"], work_dir, bpe=True))
        else:
            path = build_model(row["model"], work_dir)
        row.update(plan_columns(facts_from_gguf(path), row["model"]))
    out.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help=f"default {DEFAULT_MODELS}; --bpe: {BPE_MODELS}")
    ap.add_argument("--bpe", action="store_true", help="each model's placeholder and BPE files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=Path("/var/tmp/deployer-fitbench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rescore", action="store_true", help="recompute --out's plan columns")
    ns = ap.parse_args()
    results = Path(__file__).parent / "results"
    out = ns.out or results / ("host_overhead_bpe.json" if ns.bpe else "host_overhead.json")
    models = ns.models or (BPE_MODELS if ns.bpe else DEFAULT_MODELS)
    if ns.rescore:
        rescore(out, ns.work_dir)
        rows = json.loads(out.read_text())["rows"]
    else:
        rows = []
        for name in [n.strip() for n in models.split(",") if n.strip()]:
            for bpe in (False, True) if ns.bpe else (None,):
                row = measure(name, ns.work_dir, ns.threads, bpe)
                print(json.dumps(row), flush=True)
                rows.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"threads": ns.threads, "rows": rows}, indent=1) + "\n")
    print(
        f"{'model':26} {'vocab':>7} {'merges':>7} {'beyond':>7} {'file':>6} {'needed':>8} {'plan':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:26} {r['n_vocab']:7} {r.get('n_merges', 0):7} {r['anon_beyond_buffers_mib']:7.1f} "
            f"{r['file_peak_mib']:6.1f} {r['needed_mib']:8.1f} {r['plan_mib']:8.1f}"
        )
    if all("tokenizer" in r for r in rows) and len(rows) % 2 == 0 and ns.bpe:
        for spm, bpe in zip(rows[::2], rows[1::2], strict=True):
            added = bpe["anon_beyond_buffers_mib"] - spm["anon_beyond_buffers_mib"]
            per = added * MIB / max(bpe["n_merges"], 1)
            print(f"{bpe['model']}: BPE adds {added:.1f} MiB, {per:.0f} B a merge")
    under = [r["model"] for r in rows if r["plan_mib"] < r["needed_mib"]]
    print(
        "plan under what a loaded server needs after a long prompt: " + (", ".join(under) or "none")
    )
    return 1 if under else 0


if __name__ == "__main__":
    raise SystemExit(main())
