"""Fit accuracy on a GPU: deployer's plan vs what a CUDA llama-server allocates, uses and decodes.

The GPU side of benchmarks/fit_accuracy.py (issue 10, point 5): for each real-shaped sparse GGUF
of benchmarks/shapes.py and each setting, llama-server (a CUDA build limited to the GPU's
architecture: scripts/build-llama.sh --cuda ARCH) runs with every layer offloaded (-ngl 999), and
the row records, beside the plan's figures for the same settings on --profile:

- the buffers it logs, per device (CUDA0 model / KV / compute, the host's model and compute);
- the GPU memory the process holds, as the driver reports it (nvidia-smi, per process);
- single-stream decode speed (one completion of --n-predict tokens, EOS ignored), and the
  aggregate of as many concurrent completions as the setting has slots, against the plan's
  predicted tokens/s at the default efficiencies.

Every row is out of sample for the memory estimate (its compute-buffer coefficients were fitted
on the CPU demo): nothing here was fitted on a GPU. The weights are holes (zeros), so answers are
noise; decode time does not depend on the values.

    python benchmarks/fit_gpu.py --profile nvidia-h200-141gb [--shapes a,b] [--settings 0,1]
                                 [--deadline-s 300] [--out FILE] [--work DIR]

Writes the JSON after every row (a run cut short keeps what it measured). Exit 1 when a memory
target is missed: KV within 1 MiB of the log, GPU weights within 1%, the plan's device total at
least the process's GPU memory as the driver reports it.

With --host-caps it measures the host side instead, as a container limit meets it: per shape
and HOST_GRID setting (every layer offloaded), the smallest memory cgroup cap (no swap; v2 on a
GPU VM) under which the CUDA server loads, answers and decodes at full speed
(fit_accuracy.measure's search, from 64 MiB up), against the plan's host total, which is what
every target's memory limit is made from (docs/fit.md "The host side of a GPU server").

    python benchmarks/fit_gpu.py --host-caps [--shapes a,b] [--settings 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama import free_port, llama_prefix, server_log, stop
from fit_accuracy import READ_AHEAD_KB, Setting, _is_moe
from shapes import SHAPES, build

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.cli import wiring
from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.plan import evaluate_option, machine_spec
from deployer.core.fit.throughput import efficiency_for, predict_load
from deployer.core.hardware.profiles import Profile, get_profile
from deployer.core.units import MIB

RESULTS = Path(__file__).resolve().parent / "results" / "fit_gpu.json"
HOST_RESULTS = RESULTS.with_name("fit_gpu_host.json")


def gpu(ctx: int, slots: int = 1, kv: str = "f16", fa: bool = True) -> Setting:
    """One llama-server configuration with every layer on the GPU (fit_accuracy's Setting)."""
    return Setting(ctx, slots, kv, fa, gpu=True)


GRID = [
    gpu(4096),
    gpu(8192, 4, "q8_0"),
    gpu(4096, 4, fa=False),
    gpu(32768),
    # slot counts the throughput model's per-stream growth was not read off (out of sample)
    gpu(4096, 2),
    gpu(8192, 8),
]


# --host-caps: the host side of a fully offloaded server, judged against a cgroup cap.
HOST_GRID = [
    Setting(4096, gpu=True, cap=True),
    Setting(8192, 4, "q8_0", gpu=True, cap=True),
    Setting(4096, 4, fa=False, gpu=True, cap=True),
]
# Weights written out as real blocks up to this size (a refault of a hole is free, of a block a
# read); larger files stay sparse to keep a search inside the device's time: their host reads
# after the load are token_embd rows, whose pages the plan counts as held.
DENSE_UP_TO = 3 << 30


def host_caps(
    names: list[str], settings: list[Setting], profile: Profile, work: Path, ns: argparse.Namespace
) -> int:
    """The host side of each shape and setting under a cgroup cap (see the module's doc)."""
    from _llama import cgroup_available
    from fit_accuracy import UncappedFailure, build_model
    from fit_accuracy import measure as measure_host

    from deployer.core.serve.limits import memory_limits, pids_for

    if not cgroup_available():
        print("--host-caps needs root and a v1 or v2 memory cgroup", file=sys.stderr)
        return 3
    t0 = time.monotonic()
    machine = machine_spec(profile)
    # the machine's read-around, as the CPU benchmark records it (the largest disk's)
    meta = _run_meta(profile, read_ahead_kb=READ_AHEAD_KB)
    rows: list[dict[str, Any]] = []
    for s, name in [(s, name) for s in settings for name in names]:
        if time.monotonic() - t0 > ns.deadline_s:
            print(f"deadline: stopped before {name} {s}", flush=True)
            break
        sparse = build(name, work)
        dense = sparse.stat().st_size <= DENSE_UP_TO and not _is_moe(name)
        path = build_model(name, work, dense=dense)
        plan = evaluate_option(facts_from_gguf(path), s.fit_settings(), profile, machine)
        # The search starts where a start should pass: 1.5 GiB, or well above the plan.
        ceiling = max(1536 * MIB, int(1.25 * plan.memory.host.total_bytes))
        print(f"  {name} {s} ({'dense' if dense else 'sparse'})", flush=True)
        try:
            row = measure_host(
                name, path, s, threads=ns.threads, caps=True, n_predict=ns.n_predict,
                machine=machine, floor_bytes=64 * MIB, ceiling_bytes=ceiling,
            )  # fmt: skip
        except (Exception, SystemExit) as exc:  # a row that breaks is reported
            # a server that failed uncapped says why in its log's last lines
            tail = f"\n{exc.log[-2000:]}" if isinstance(exc, UncappedFailure) else ""
            row = {"model": name, "ctx": s.ctx, "slots": s.slots,
                   "error": (repr(exc) + tail)[-4000:]}  # fmt: skip
        else:
            total = row["host_total_est"]
            # the memory limit every target would carry for this plan
            limits = memory_limits(total, pids_for(profile.cpu_cores or 1))
            row |= {"dense": dense, "limit_est": limits.memory_limit_bytes}
            cap = row.get("cap")
            print(
                f"  -> {name} ctx={s.ctx} np={s.slots} kv={s.kv} fa={s.fa}: cap "
                f"{'-' if cap is None else round(cap / MIB)} MiB, plan host total "
                f"{total / MIB:.0f} MiB, limit {row['limit_est'] / MIB:.0f} MiB; RssAnon "
                f"{row['rss_anon_peak'] / MIB:.0f} RssFile {row['rss_file_peak'] / MIB:.0f} "
                f"VmHWM {row['vm_hwm'] / MIB:.0f}",
                flush=True,
            )
        rows.append(row)
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    failed = [r for r in rows if r.get("error")]
    print(f"{len(rows) - len(failed)} rows measured, {len(failed)} failed")
    return 1 if failed or not rows else 0


def _run_meta(profile: Profile, **extra: Any) -> dict[str, Any]:
    """Where and with what a run measured (the JSON's meta), printed as the run starts."""
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpu": _gpu_name(),
        "host": platform.node(),
        "profile": profile.id,
        "llama_prefix": str(llama_prefix()),
        **extra,
    }
    print(meta, flush=True)
    return meta


def _gpu_mib_of(pid: int) -> float:
    """GPU memory the driver charges to `pid` (MiB), 0 when nvidia-smi does not list it."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except OSError:
        return 0.0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return 0.0


def _complete(port: int, n_predict: int, out: list[float]) -> None:
    body = {"prompt": "Hello", "n_predict": n_predict, "ignore_eos": True, "temperature": 0}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        timings = json.loads(r.read()).get("timings", {})
    out.append(float(timings.get("predicted_per_second", 0.0)))


def _serve(path: Path, args: list[str], n_predict: int, slots: int) -> dict[str, Any]:
    port = free_port()
    cmd = [str(llama_prefix() / "bin" / "llama-server"), "-m", str(path), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "-v", *args]
    logf = server_log()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True)
    got: dict[str, Any] = {"loaded": False, "error": ""}
    try:
        while time.monotonic() - t0 < 300 and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        got["loaded"] = True
                        break
            except OSError:
                time.sleep(0.2)
        got["load_s"] = round(time.monotonic() - t0, 1)
        if got["loaded"]:
            got["gpu_mib_idle"] = _gpu_mib_of(proc.pid)
            one: list[float] = []
            _complete(port, 16, one)  # warm-up (CUDA graphs, first allocations)
            one.clear()
            _complete(port, n_predict, one)
            got["decode_tok_s"] = round(one[0], 1)
            if slots > 1:
                speeds: list[float] = []
                workers = [
                    threading.Thread(target=_complete, args=(port, n_predict, speeds))
                    for _ in range(slots)
                ]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                got["aggregate_tok_s"] = round(sum(speeds), 1)
            got["gpu_mib_peak"] = _gpu_mib_of(proc.pid)
    except OSError as exc:
        got["error"] = f"completion failed: {exc}"
    finally:
        stop(proc)
        logf.seek(0)
        log = logf.read()
        logf.close()
    if not got["loaded"]:
        got["error"] = "did not come up: " + " | ".join(log.strip().splitlines()[-4:])
    got["log"] = log
    return got


def estimates(path: Path, s: Setting, profile: Profile, n_predict: int) -> dict[str, Any]:
    """The plan's figures for one row (the current code's, whatever measured the row)."""
    facts = facts_from_gguf(path)
    fs = s.fit_settings()
    option = evaluate_option(facts, fs, profile, machine_spec(profile))
    dev, host = option.memory.devices[0], option.memory.host
    eff = efficiency_for(profile, None)
    one = predict_load(option, profile, slots=1, prompt_tokens=1, output_tokens=n_predict,
                       efficiency=eff)  # fmt: skip
    many = predict_load(option, profile, slots=s.slots, prompt_tokens=1, output_tokens=n_predict,
                        efficiency=eff)  # fmt: skip
    return {
        "arch": facts.arch.architecture,
        "gpu_weights_est": dev.logged_weights_bytes,
        "gpu_kv_est": dev.kv_cache_bytes,
        "gpu_compute_est": dev.compute_bytes,
        "gpu_output_est": dev.output_bytes,
        "gpu_overhead_est": dev.overhead_bytes,
        "gpu_total_est": dev.total_bytes,
        "host_weights_est": host.logged_weights_bytes,
        "host_compute_est": host.compute_bytes,
        "host_output_est": host.output_bytes,
        "decode_tok_s_est": round(one.per_stream_tokens_per_s, 1),
        "aggregate_tok_s_est": round(many.aggregate_tokens_per_s, 1),
    }


def score(row: dict[str, Any]) -> dict[str, Any]:
    """The targets' verdicts on a row that holds measurements and estimates."""
    smi = max(row.get("gpu_mib_idle", 0.0), row.get("gpu_mib_peak", 0.0)) * MIB
    row["kv_ok"] = abs(row["gpu_kv_est"] - row["gpu_kv_real"]) <= MIB
    weights_tol = 0.01 * max(row["gpu_weights_real"], 1)
    row["weights_ok"] = abs(row["gpu_weights_est"] - row["gpu_weights_real"]) <= weights_tol
    row["total_ok"] = bool(smi) and row["gpu_total_est"] >= smi
    row["gpu_total_est_over_smi"] = round(row["gpu_total_est"] / smi, 3) if smi else None
    for what in ("decode_tok_s", "aggregate_tok_s"):
        if row.get(what):
            row[f"{what}_est_over_real"] = round(row[f"{what}_est"] / row[what], 2)
    return row


def measure(name: str, path: Path, s: Setting, profile: Profile, n_predict: int) -> dict[str, Any]:
    est = estimates(path, s, profile, n_predict)
    run = _serve(path, s.args(profile.cpu_cores or 8), n_predict, s.slots)
    logged = parse_buffers(run.pop("log").split("loaded meta data")[-1])
    gpu = {c: logged.get("CUDA0", c) for c in ("model", "compute", "output")}
    gpu["KV"] = logged.cache("CUDA0")  # a recurrent state (RS) with its KV
    row: dict[str, Any] = {
        "model": name,
        "ctx": s.ctx,
        "slots": s.slots,
        "kv_type": s.kv,
        "flash_attention": s.fa,
        **run,
        "gpu_weights_real": gpu["model"],
        "gpu_kv_real": gpu["KV"],
        "gpu_compute_real": gpu["compute"],
        "gpu_output_real": gpu["output"],
        "host_weights_real": logged.get("host", "model"),
        "host_compute_real": logged.get("host", "compute"),
        "host_output_real": logged.get("host", "output"),
        "offloaded_layers": logged.offloaded_layers,
        **est,
    }
    return score(row)


def _mib(x: float) -> str:
    return f"{x / MIB:8.1f}"


def _print(r: dict[str, Any]) -> None:
    if r.get("error"):
        print(f"{r['model']:24} ctx={r['ctx']} np={r['slots']}: {r['error']}", flush=True)
        return
    print(
        f"{r['model']:24} ctx={r['ctx']:6} np={r['slots']} kv={r['kv_type']:4} fa={r['flash_attention']!s:5} "
        f"W {_mib(r['gpu_weights_real'])}/{_mib(r['gpu_weights_est'])} "
        f"KV {_mib(r['gpu_kv_real'])}/{_mib(r['gpu_kv_est'])} "
        f"C {_mib(r['gpu_compute_real'])}/{_mib(r['gpu_compute_est'])} "
        f"smi {r.get('gpu_mib_peak', 0):8.0f} plan {_mib(r['gpu_total_est'])} "
        f"tok/s {r.get('decode_tok_s', 0):7.1f}/{r['decode_tok_s_est']:8.1f} "
        f"agg {r.get('aggregate_tok_s', 0):7.1f}/{r['aggregate_tok_s_est']:8.1f} "
        f"{'ok' if r['kv_ok'] and r['weights_ok'] and r['total_ok'] else 'MISS'}",
        flush=True,
    )


def _gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()
    except OSError:
        return "no nvidia-smi"


def _summary(rows: list[dict[str, Any]]) -> bool:
    done = [r for r in rows if not r.get("error")]
    ok = bool(done) and all(r["kv_ok"] and r["weights_ok"] and r["total_ok"] for r in done)
    for what in ("decode_tok_s", "aggregate_tok_s"):
        ratios = sorted(r[f"{what}_est_over_real"] for r in done if r.get(f"{what}_est_over_real"))
        if ratios:
            mid = ratios[len(ratios) // 2]
            print(f"{what}: predicted/measured {ratios[0]}-{ratios[-1]}, median {mid}")
    missed = [f"{r['model']} ctx {r['ctx']} np {r['slots']}" for r in done if not r["total_ok"]]
    if missed:
        print("device total under the driver's figure: " + "; ".join(missed))
    print(f"{len(done)} rows, {len(rows) - len(done)} failed, targets {'met' if ok else 'MISSED'}")
    return ok


def rescore(src: Path, out: Path, profile: Profile, work: Path, n_predict: int) -> int:
    """Recompute the estimates of measured rows with the current code, and score them."""
    data = json.loads(src.read_text())
    rows = []
    for row in data["rows"]:
        if not row.get("error"):
            s = gpu(row["ctx"], row["slots"], row["kv_type"], row["flash_attention"])
            row = score(row | estimates(build(row["model"], work), s, profile, n_predict))
            _print(row)
        rows.append(row)
    data["rows"] = rows
    data["meta"]["rescored"] = datetime.now(UTC).isoformat(timespec="seconds")
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0 if _summary(rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--profile", default="nvidia-h200-141gb")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument(
        "--settings", default=None, help="indices into GRID (default all), or HOST_GRID (0)"
    )
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--deadline-s", type=float, default=1e9, help="start no row after this")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "deployer-shapes")
    ap.add_argument(
        "--out", type=Path, default=None, help=f"default {RESULTS.name}, or {HOST_RESULTS.name}"
    )
    ap.add_argument(
        "--rescore",
        type=Path,
        help="no GPU: recompute the plan's figures for the rows measured in this JSON (the"
        " shapes are rebuilt here, headers only) and score them again",
    )
    ap.add_argument(
        "--host-caps",
        action="store_true",
        help="the host side under a cgroup cap, per HOST_GRID setting (root, a memory cgroup)",
    )
    ap.add_argument("--threads", type=int, default=8, help="llama-server -t/-tb with --host-caps")
    args = ap.parse_args()
    wiring.install_data_source()
    profile = get_profile(args.profile)
    grid = HOST_GRID if args.host_caps else GRID
    args.out = args.out or (HOST_RESULTS if args.host_caps else RESULTS)
    default = "0" if args.host_caps else ",".join(str(i) for i in range(len(GRID)))
    try:
        settings = [grid[int(i)] for i in (args.settings or default).split(",")]
    except (ValueError, IndexError):
        print(f"--settings takes indices 0-{len(grid) - 1}: got {args.settings!r}", file=sys.stderr)
        return 2
    if args.host_caps:
        return host_caps(args.shapes.split(","), settings, profile, args.work, args)
    if args.rescore:
        return rescore(args.rescore, args.out, profile, args.work, args.n_predict)
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    meta = _run_meta(profile)
    names = args.shapes.split(",")
    # Every shape at the first setting before any shape at the next: a cut-short run covers
    # the architectures first.
    for s in settings:
        for name in names:
            if time.monotonic() - t0 > args.deadline_s:
                print(f"deadline: stopped before {name} {s}", flush=True)
                break
            path = build(name, args.work)
            try:
                row = measure(name, path, s, profile, args.n_predict)
            except Exception as exc:  # a row that breaks is reported, the run goes on
                row = {"model": name, "ctx": s.ctx, "slots": s.slots, "error": repr(exc)}
            rows.append(row)
            _print(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    done = [r for r in rows if not r.get("error")]
    ok = done and all(r["kv_ok"] and r["weights_ok"] and r["total_ok"] for r in done)
    print(
        f"{len(done)} rows measured, {len(rows) - len(done)} failed, targets {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
