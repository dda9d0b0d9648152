"""llama-server's prompt cache (--cache-ram N) against the N MiB the plan holds for it.

One uncapped start per cache size, weights loaded (`--load-mode none`, so anonymous memory is
the whole story), one slot: distinct prompts one after another, each of `--tokens` token ids.
With one slot, every new prompt makes the server save the slot's previous state into the cache
(or drop it when the cache is off); RssAnon after each answer, less the first answer's, is what
the cache holds. The cache frees its oldest states before it stores one that would take it past
N, so the growth must stay at or under N MiB (and 1 MiB of allocator drift, which the cache
off shows too): that is what `--prompt-cache N` adds to the plan.

    python benchmarks/prompt_cache.py [--model llama3.2-1b-q4_k_m] [--sizes 0,64] [--prompts 8]

Results go to benchmarks/results/prompt_cache.json. Needs the llama-server of
scripts/build-llama.sh; the model is a shape of benchmarks/shapes.py (sparse: loaded weights are
anonymous memory whatever they hold).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix, post_completion, server_log, stop, wait_healthy
from fit_truth import parse_proc_status

from deployer.core.units import MIB

NOISE_MIB = 1.0


def distinct_prompts(
    path: Path, extra_args: list[str], prompts: int, tokens: int, *, ctx: int, threads: int
) -> tuple[list[float], str]:
    """Start llama-server on `path` (weights loaded, one slot, flash attention) with
    `extra_args`, send `prompts` prompts of `tokens` token ids that share no prefix, and return
    RssAnon (MiB) after each answer and the server's log."""
    port = free_port()
    cmd = [
        str(llama_prefix() / "bin" / "llama-server"), "-m", str(path), "--host", "127.0.0.1",
        "--port", str(port), "-c", str(ctx), "-np", "1", "-fa", "on", "--fit", "off",
        "-t", str(threads), "-tb", str(threads), "--load-mode", "none", *extra_args,
    ]  # fmt: skip
    with server_log() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        status = Path(f"/proc/{proc.pid}/status")
        anon: list[float] = []
        try:
            try:
                wait_healthy(port, proc, timeout_s=600)
            except RuntimeError as exc:
                log.seek(0)
                raise SystemExit(f"{exc}:\n{log.read()[-2000:]}") from None
            for i in range(prompts):
                # Distinct from the first token on: no prompt shares a prefix with another.
                ids = [10 + (i * 7919 + j * 31) % 30000 for j in range(tokens)]
                post_completion(port, {"prompt": ids, "n_predict": 2, "cache_prompt": True}, 3000)
                anon.append(parse_proc_status(status.read_text()).anon / MIB)
        finally:
            stop(proc)
        log.seek(0)
        return anon, log.read()


def run(path: Path, cache_mib: int, prompts: int, tokens: int, threads: int) -> dict[str, Any]:
    """RssAnon after each of `prompts` distinct prompts, with --cache-ram `cache_mib`."""
    t0 = time.monotonic()
    anon, _ = distinct_prompts(
        path, ["--cache-ram", str(cache_mib)], prompts, tokens, ctx=4096, threads=threads
    )
    growth = [a - anon[0] for a in anon]
    return {
        "cache_mib": cache_mib,
        "prompts": prompts,
        "prompt_tokens": tokens,
        "anon_mib": [round(a, 1) for a in anon],
        "growth_mib": round(max(growth), 1),
        # 1 MiB for the allocator's own drift (the cache off grows 0.3 MiB over ten prompts)
        "within_cache": max(growth) <= cache_mib + NOISE_MIB,
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama3.2-1b-q4_k_m")
    ap.add_argument("--sizes", default="0,64", help="--cache-ram values, MiB")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=520)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=Path("/var/tmp/deployer-fitbench"))
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "prompt_cache.json"
    )
    ns = ap.parse_args()
    import shapes

    path = Path(shapes.build(shapes.shape_named(ns.model).name, ns.work_dir))
    rows = []
    for size in [int(x) for x in ns.sizes.split(",")]:
        row = run(path, size, ns.prompts, ns.tokens, ns.threads)
        print(json.dumps(row), flush=True)
        rows.append(row)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"model": ns.model, "threads": ns.threads, "rows": rows}
    ns.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'--cache-ram':>11} {'grew':>8}  within")
    for r in rows:
        print(f"{r['cache_mib']:>11} {r['growth_mib']:>8.1f}  {r['within_cache']}")
    return 0 if all(r["within_cache"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
