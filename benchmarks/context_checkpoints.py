"""llama-server's context checkpoints for a sliding-window model, as the plan holds them.

One uncapped start, weights loaded, one slot, --ctx-checkpoints 3, the prompt cache off:
distinct long prompts one after another; RssAnon after each, and every checkpoint the server
logs (created, with its size; erased). A checkpoint holds the slot's sliding-window KV at that
point; a prompt that shares no prefix with the slot's invalidates the earlier ones.

    python benchmarks/context_checkpoints.py MODEL CHECKPOINTS PROMPTS TOKENS CTX
    e.g. python benchmarks/context_checkpoints.py gemma2-2b-q4_k_m 3 5 1900 2048

CHECKPOINTS `default` leaves the flag out (the server's own 32). Prints one JSON line a prompt,
the logged buffers and the server's checkpoint lines (results of the run in docs/fit.md:
benchmarks/results/context_checkpoints.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prompt_cache import distinct_prompts

from deployer.core.fit.llamalog import parse_buffers
from deployer.core.units import MIB


def main(argv: list[str]) -> int:
    import shapes

    name, checkpoints, prompts, tokens, ctx = argv
    path = Path(shapes.build(shapes.shape_named(name).name, Path("/var/tmp/deployer-fitbench")))
    flags = ["--cache-ram", "0", "-v"]
    if checkpoints != "default":
        flags += ["--ctx-checkpoints", str(int(checkpoints))]
    anon, log = distinct_prompts(path, flags, int(prompts), int(tokens), ctx=int(ctx), threads=2)
    for i, a in enumerate(anon):
        print(json.dumps({"ck": checkpoints, "prompt": i, "anon_mib": round(a, 1)}))
    logged = parse_buffers(log.split("loaded meta data")[-1])
    print(
        "buffers",
        {c: round(logged.get("host", c) / MIB, 1) for c in ("model", "KV", "compute", "output")},
    )
    print("\n".join(t for t in log.splitlines() if "checkpoint" in t.lower())[-2500:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
