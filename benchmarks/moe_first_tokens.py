"""A mapped MoE's first answers under a memory cap: speed and disk reads, answer by answer.

Starts llama-server on a routed MoE shape (fit_accuracy's routed copy, its page cache evicted
first) inside a memory cgroup capped at each of `--caps-mib`, then sends `--answers` sampled
answers of `--n-predict` tokens, each with its own seed, and records for each: tokens/s, the
bytes the server read from disk (/proc/PID/io read_bytes), its major faults, and the group's
file pages. One uncapped start gives the speed to compare with.

    python benchmarks/moe_first_tokens.py --model deepseek-v2-lite-q4_k_m --caps-mib 10002,9085

The caps are the caps the server runs under (no long prompt's `fill` is added, unlike
fit_accuracy.py's). Needs root and a cgroup v1 memory hierarchy (v2 runs, but its memory.stat
names differ and the file-page columns read 0). Results go to
benchmarks/results/moe_first_tokens.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import shapes
from _llama import (
    PROMPT,
    MemoryCgroup,
    cgroup_available,
    drop_file_cache,
    free_port,
    in_group,
    llama_prefix,
    post_completion,
    sampled_request,
    stop,
    wait_healthy,
)
from fit_accuracy import SHAPE_GRID, _is_moe, build_model, write_doc

from deployer.core.units import MIB


def _io(pid: int) -> tuple[int, int]:
    """Bytes read from storage and major faults of process `pid` so far."""
    fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields["read_bytes"]), int(stat[9])


def one_start(
    path: Path, args: list[str], cap_mib: int | None, answers: int, n: int
) -> dict[str, Any]:
    port = free_port()
    cmd = [str(llama_prefix() / "bin" / "llama-server"), "-m", str(path)]
    # -v as fit_accuracy's starts run it (the same server, the same logging work)
    cmd += ["--host", "127.0.0.1", "--port", str(port), "-v", *args]
    drop_file_cache(path)
    cg = None
    if cap_mib is not None:
        cg = MemoryCgroup.create(f"deployer-moe-{os.getpid()}-{port}", cap_mib * MIB)
        cmd = in_group(cg.path, cmd)
    rows: list[dict[str, Any]] = []
    error = ""
    proc = None
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        wait_healthy(port, proc, timeout_s=900, probe_timeout_s=2)
        for k in range(answers):
            read0, faults0 = _io(proc.pid)
            request = {"prompt": PROMPT, "n_predict": n, "ignore_eos": True}
            # Answer k has the same seed in every start: the starts compare the same tokens.
            sampled = sampled_request(seed=1000 + k)
            reply = post_completion(port, request | {"cache_prompt": False} | sampled, 600)
            read1, faults1 = _io(proc.pid)
            stat = cg.stat() if cg is not None else {}
            rows.append(
                {
                    "tokens_per_s": round(float(reply["timings"]["predicted_per_second"]), 2),
                    "read_mib_per_token": round((read1 - read0) / MIB / n, 2),
                    "major_faults": faults1 - faults0,
                    "mapped_file_mib": round(stat.get("mapped_file", 0) / MIB),
                    "active_file_mib": round(stat.get("active_file", 0) / MIB),
                }
            )
            print(f"    cap {cap_mib}: {rows[-1]}", flush=True)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        error = f"{type(e).__name__}: {e}"
        print(f"    cap {cap_mib}: stopped: {error}", flush=True)
    finally:
        try:
            if proc is not None:
                stop(proc, timeout_s=10)
        finally:
            if cg is not None:
                cg.remove()
    return {"cap_mib": cap_mib, "answers": rows, "error": error}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an MoE name from benchmarks/shapes.py")
    ap.add_argument("--setting", type=int, default=0, help="index into fit_accuracy's grid")
    ap.add_argument("--caps-mib", required=True, help="comma-separated caps in MiB")
    ap.add_argument("--answers", type=int, default=14)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=Path("/var/tmp/deployer-fitbench"))
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "moe_first_tokens.json"
    )
    ns = ap.parse_args()
    if not _is_moe(ns.model):
        print(f"{ns.model!r} is not an MoE shape of benchmarks/shapes.py", file=sys.stderr)
        return 2
    if not cgroup_available():
        print("needs root and a memory cgroup (/sys/fs/cgroup/memory)", file=sys.stderr)
        return 3
    try:
        caps = [int(c) for c in ns.caps_mib.split(",")]
        setting = SHAPE_GRID[ns.setting]
    except (ValueError, IndexError):
        print("--caps-mib takes MiB such as 10002,9085; --setting a grid index", file=sys.stderr)
        return 2
    path = build_model(ns.model, ns.work_dir, dense=True)
    args = setting.args(ns.threads)
    # earlier runs in the file are kept, newest last, under "superseded"
    try:
        before = json.loads(ns.out.read_text())
        kept = [*before.pop("superseded", []), before] if before.get("starts") else []
    except (OSError, ValueError, AttributeError, TypeError):  # none yet, or not a results file
        kept = []
    t0 = time.monotonic()
    starts: list[dict[str, Any]] = []
    for cap in [None, *caps]:
        print(f"  {ns.model} {setting} cap {cap}", flush=True)
        starts.append(one_start(path, args, cap, ns.answers, ns.n_predict))
        doc = {  # written after every start: a later one's failure keeps the earlier ones
            "model": ns.model,
            "setting": str(setting),
            "llama_prefix": str(llama_prefix()),
            "threads": ns.threads,
            "n_predict": ns.n_predict,
            "routing_version": shapes.ROUTING_VERSION,
            "starts": starts,
            "seconds": round(time.monotonic() - t0, 1),
            "superseded": kept,
        }
        write_doc(ns.out, doc)
    return 0 if all(not s["error"] for s in starts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
