"""Prove every shape in benchmarks/shapes.py loads: llama-server, deployer's reader and plan.

For each entry: build the sparse file, start llama-server -v with -c 4096 -np 1, wait for
/health, ask for a short completion (noise tokens: the weights are zeros), stop it; check the
`... buffer size = X MiB` lines it logged (a file over 60% of the free RAM runs with
--no-repack); read the file with facts_from_gguf and compare with the table; run
`deployer plan PATH --profile cpu-x86-2c-8gb --json`. Results: benchmarks/results/shapes_check.json
(--json FILE).

    python benchmarks/shapes_check.py [--out DIR] [--json FILE] [NAME...]

Needs DEPLOYER_LLAMA_PREFIX (or builds llama.cpp via scripts/build-llama.sh). CPU-heavy: on a
2-core machine an 8B decodes at well under 1 token/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix, server_log, stop
from shapes import DEFAULT_OUT, SHAPES, Shape, build, shape_named

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.units import MIB

_BUFFER = "buffer size ="
RESULTS = Path(__file__).resolve().parent / "results" / "shapes_check.json"


@dataclass
class CheckResult:
    """What one entry did under llama-server and deployer."""

    name: str
    arch: str
    file_bytes: int
    loaded: bool = False
    load_s: float = 0.0
    buffers_mib: dict[str, float] = field(default_factory=dict)
    buffer_lines: list[str] = field(default_factory=list)
    decode_tok_s: float = 0.0
    answer: str = ""
    facts_ok: bool = False
    plan_fits: bool | None = None
    plan_total_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    note: str = ""  # a setting changed to make the run possible


def _post(port: int, path: str, body: dict[str, object], timeout_s: float) -> dict[str, object]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        out: dict[str, object] = json.loads(r.read())
        return out


def _serve(
    res: CheckResult, path: Path, n_predict: int, timeout_s: float, extra: list[str]
) -> None:
    port = free_port()
    binary = llama_prefix() / "bin" / "llama-server"
    cmd = [str(binary), "-m", str(path), "-c", "4096", "-np", "1", "--host", "127.0.0.1"]
    # --fit off, as deployer renders it: no trial load, whose 0-byte buffers would be logged too
    cmd += ["--port", str(port), "-v", "--fit", "off", *extra]
    logf = server_log()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    try:
        while time.monotonic() - t0 < timeout_s and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        res.load_s = round(time.monotonic() - t0, 1)
                        res.loaded = True
                        break
            except OSError:
                time.sleep(0.3)
        if res.loaded:
            body = {"prompt": "Hello", "n_predict": n_predict, "ignore_eos": True}
            answer = _post(port, "/completion", body, timeout_s)
            timings = answer.get("timings")
            if isinstance(timings, dict):
                res.decode_tok_s = round(float(timings.get("predicted_per_second", 0.0)), 2)
            res.answer = str(answer.get("content", ""))[:60]
    except OSError as exc:
        res.problems.append(f"completion failed: {exc}")
    finally:
        stop(proc)
        logf.seek(0)
        log = logf.read()
        logf.close()
    if not res.loaded:
        tail = " | ".join(log.strip().splitlines()[-3:])
        res.problems.append(f"llama-server did not come up: {tail}")
    res.buffer_lines = [ln.split(" I ", 1)[-1].strip() for ln in log.splitlines() if _BUFFER in ln]
    for (dev, kind), n in sorted(parse_buffers(log).buffers.items()):
        res.buffers_mib[f"{dev} {kind}"] = round(n / MIB, 2)
    if res.loaded and not res.buffers_mib:
        res.problems.append("no '... buffer size = X MiB' lines in the log")


def _check_facts(res: CheckResult, shape: Shape, path: Path) -> None:
    facts = facts_from_gguf(path)
    a = facts.arch
    want = {
        "architecture": shape.arch,
        "n_layer": shape.n_layer,
        "n_embd": shape.n_embd,
        "n_head": shape.n_head,
        # a hybrid's delta-net blocks hold no KV
        "n_head_kv": [
            shape.n_head_kv if shape.is_attention(i) else 0 for i in range(shape.n_layer)
        ],
        "head_dim_k": shape.head_dim,
        "n_vocab": shape.n_vocab,
        "ctx_train": shape.ctx_train,
        "n_expert": shape.n_expert,
        "tied_embeddings": shape.tied,
    }
    got = {k: getattr(a, k) for k in want}
    bad = [f"{k}: read {got[k]!r}, table {v!r}" for k, v in want.items() if got[k] != v]
    res.problems += [f"facts_from_gguf {b}" for b in bad]
    res.facts_ok = not bad


def _check_plan(res: CheckResult, path: Path) -> None:
    cmd = [sys.executable, "-c", "from deployer.cli.app import main; main()", "plan", str(path)]
    cmd += ["--profile", "cpu-x86-2c-8gb", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        plan = json.loads(out.stdout)
    except json.JSONDecodeError:
        res.problems.append(f"deployer plan exit {out.returncode}: {out.stderr.strip()[:200]}")
        return
    res.plan_fits = bool(plan.get("fits"))
    res.plan_total_bytes = int(plan.get("memory", {}).get("total_bytes", 0))


def check(
    name: str,
    out_dir: Path,
    n_predict: int = 8,
    timeout_s: float = 900.0,
    force: bool = False,
    no_repack: bool = False,
) -> CheckResult:
    """Build one entry and run every check on it (llama-server only where memory allows)."""
    import psutil

    shape = shape_named(name)
    path = build(name, out_dir)
    res = CheckResult(shape.name, shape.arch, path.stat().st_size)
    _check_facts(res, shape, path)
    _check_plan(res, path)
    # CPU repacking copies most weights into anonymous memory: a file near the free RAM
    # would push other work on a shared machine out (the 17 GiB MoE on a 24 GiB box).
    # Without repacking the weights stay in the page cache, which the kernel can reclaim.
    available = psutil.virtual_memory().available
    if not no_repack and res.file_bytes > 0.6 * available and not force:
        no_repack = True
        res.note = (
            f"--no-repack: {res.file_bytes / 2**30:.1f} GiB file, {available / 2**30:.1f} GiB free"
        )
    _serve(res, path, n_predict, timeout_s, ["--no-repack"] if no_repack else [])
    return res


def _summary(res: CheckResult) -> str:
    model = sum(v for k, v in res.buffers_mib.items() if k.endswith("model"))
    kv = sum(v for k, v in res.buffers_mib.items() if k.endswith(("KV", "RS")))
    compute = sum(v for k, v in res.buffers_mib.items() if k.endswith("compute"))
    return (
        f"{res.name:24} {res.arch:9} {res.file_bytes / 2**30:6.2f} GiB "
        f"loads={'yes' if res.loaded else 'NO':3} load={res.load_s:5.1f}s "
        f"model={model:8.1f} kv={kv:6.1f} compute={compute:6.1f} MiB "
        f"decode={res.decode_tok_s:5.2f} tok/s facts={'ok' if res.facts_ok else 'BAD'} "
        f"plan_fits={res.plan_fits}" + (f" ({res.note})" if res.note else "")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"results (default {RESULTS})")
    ap.add_argument("--n-predict", type=int, default=8)
    ap.add_argument("--force", action="store_true", help="repack even a file near the free RAM")
    ap.add_argument(
        "--no-repack", action="store_true", help="pass --no-repack: weights stay file-backed"
    )
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    try:
        names = [shape_named(n).name for n in args.names or SHAPES]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = []
    for name in names:
        res = check(name, args.out, args.n_predict, force=args.force, no_repack=args.no_repack)
        results.append(res)
        print(_summary(res), flush=True)
        for p in res.problems:
            print(f"    {p}", flush=True)
    if args.names and args.json == RESULTS:
        print(f"(a subset: not written to {RESULTS}; pass --json FILE)")
    elif args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    ok = all(r.loaded and r.facts_ok and not r.problems for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
