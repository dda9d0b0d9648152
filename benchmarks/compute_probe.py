"""Probe llama.cpp's compute buffer on synthetic variants of an architecture, one knob at a time.

The compute buffer is the allocator's peak over one layer's graph. Its terms are read off
variants that are not the benchmark's models: two-layer files of an architecture (weights
sparse, a small vocabulary) with one hyperparameter changed at a time (experts used, expert
width, number of experts, embedding width, heads). llama-server logs the buffer while it
creates its context, so each variant is started, its `compute buffer size` read, and stopped:
about two seconds each. The estimator's figure is printed beside it.

    python benchmarks/compute_probe.py [--base qwen3-30b-a3b-q4_k_m] [--ubatch 512] [--ctx 4096]
                                       [--parallel 1] [--fa on|off] [--json FILE]

Results: benchmarks/results/compute_probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix, server_log, stop
from shapes import Shape, _write_header, file_bytes, shape_named

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import FitSettings, compute_bytes
from deployer.core.units import MIB

RESULTS = Path(__file__).resolve().parent / "results" / "compute_probe.json"


def variants(base: Shape) -> list[tuple[str, Shape]]:
    """The base cut to two layers and a 32k vocabulary, then one knob changed at a time."""
    b = replace(base, n_layer=2, n_vocab=32000, bos_id=1, eos_id=2)
    out: list[tuple[str, Shape]] = [("base", b)]
    if b.n_expert:
        out += [(f"used={u}", replace(b, n_expert_used=u)) for u in (2, 4, 16) if u <= b.n_expert]
        ff = b.n_ff_expert or b.n_ff
        for f in (ff // 2, ff * 2):
            out.append((f"expert_ff={f}", replace(b, n_ff_expert=f) if b.n_ff_expert
                        else replace(b, n_ff=f)))  # fmt: skip
        out += [(f"experts={e}", replace(b, n_expert=e)) for e in (32, 256) if e != b.n_expert]
    else:
        out += [(f"ff={f}", replace(b, n_ff=f)) for f in (b.n_ff // 2, b.n_ff * 2)]
    out += [(f"n_embd={e}", replace(b, n_embd=e)) for e in (b.n_embd // 2, b.n_embd * 2)]
    out += [(f"n_head={h}", replace(b, n_head=h)) for h in (b.n_head // 2, b.n_head * 2)]
    return out


def write(shape: Shape, path: Path) -> Path:
    header = _write_header(shape, path)
    os.truncate(path, file_bytes(shape, header))
    return path


def logged_compute(path: Path, args: list[str], timeout_s: float = 60) -> tuple[int | None, str]:
    """The host compute buffer llama-server logs for `path` (bytes), or None and the log's
    first error line when it logs none (llama.cpp refused the variant: an olmoe whose heads
    times head size is not n_embd, for one)."""
    cmd = [str(llama_prefix() / "bin" / "llama-server"), "-m", str(path), "-v"]
    cmd += ["--host", "127.0.0.1", "--port", str(free_port())]
    cmd += ["--fit", "off", "--no-repack", *args]
    logf = server_log()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s and proc.poll() is None:
            logf.seek(0)
            if "compute buffer size" in logf.read():
                time.sleep(0.2)
                break
            time.sleep(0.1)
    finally:
        stop(proc)
        logf.seek(0)
        log = logf.read()
        logf.close()
    compute = parse_buffers(log).get("host", "compute")
    if compute:
        return compute, ""
    errors = [line for line in log.splitlines() if " E " in line or "error" in line.lower()]
    return None, (errors[0].strip() if errors else "no compute buffer logged")[-300:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", action="append", default=None, help="shape name (repeatable)")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--ubatch", type=int, default=512)
    ap.add_argument("--fa", default="on", choices=["on", "off"])
    ap.add_argument("--parallel", type=int, default=1, help="-np: slots, a stream each")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ns = ap.parse_args()
    bases = ns.base or ["qwen3-30b-a3b-q4_k_m", "olmoe-1b-7b-q4_k_m", "llama3.2-1b-q4_k_m"]
    args = ["-c", str(ns.ctx), "-np", str(ns.parallel), "-ub", str(ns.ubatch)]
    args += ["-b", str(max(ns.ubatch, 2048))]
    args += ["-fa", ns.fa, "-t", "2"]
    settings = FitSettings(
        ctx=ns.ctx, parallel=ns.parallel, n_ubatch=ns.ubatch, flash_attention=ns.fa == "on"
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for name in bases:
            for label, shape in variants(shape_named(name)):
                path = write(shape, Path(tmp) / "probe.gguf")
                real, error = logged_compute(path, args)
                est = compute_bytes(facts_from_gguf(path).arch, settings)
                rows.append({"base": name, "variant": label, "arch": shape.arch,
                             "n_embd": shape.n_embd, "n_head": shape.n_head,
                             "head_dim": shape.head_dim, "n_head_kv": shape.n_head_kv,
                             "n_ff": shape.n_ff, "n_ff_expert": shape.n_ff_expert,
                             "n_expert": shape.n_expert, "n_expert_used": shape.n_expert_used,
                             "ctx": ns.ctx, "parallel": ns.parallel,
                             "ubatch": ns.ubatch, "fa": ns.fa,
                             "logged": real, "estimated": est,
                             **({"error": error} if error else {})})  # fmt: skip
                if real is None:
                    print(f"{name:24} {label:16} not loaded: {error}", flush=True)
                else:
                    print(f"{name:24} {label:16} logged {real / MIB:8.2f}  est {est / MIB:8.2f}  "
                          f"diff {(est - real) / MIB:+7.2f} MiB", flush=True)  # fmt: skip
                path.unlink()
    doc = json.loads(ns.json.read_text()) if ns.json.exists() else {"rows": []}
    key = (ns.ubatch, ns.fa, ns.ctx, ns.parallel)
    keep = [r for r in doc["rows"]
            if (r["ubatch"], r["fa"], r["ctx"], r.get("parallel", 1)) != key
            or r["base"] not in bases]  # fmt: skip
    doc["rows"] = keep + rows
    ns.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
