"""The plan's buffers against llama-server's log on small real-shaped files of every architecture
the integration tests build (tests/integration/test_fit_arch*.py, zero weights,
embedding 256, a few layers), at three settings: ctx 8192 x 2 slots with flash attention, ctx
4096 x 1 slot without, and ctx 8192 x 16 slots with it (the worst-case graph is reserved for
every slot: recurrent layers' states grow with them).

For each file and setting: the cache (KV + recurrent state, DeepSeek 4's compressor state
included), the host weights as llama-server logs them (mapped, plus the repacked copies) and
the compute buffer, logged / planned in MiB. The tests assert the targets (KV and state each
within 0.01 MiB, weights within 0.02 MiB, compute never under); this prints the table docs/fit.md
shows
and writes benchmarks/results/arch_check.json.

    python benchmarks/arch_check.py [--only NAME,...]

Needs the llama-server of scripts/build-llama.sh (or DEPLOYER_LLAMA_PREFIX). About two minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _llama import run_server  # noqa: E402

from deployer.adapters.gguf_files import facts_from_gguf  # noqa: E402
from deployer.core.fit.llamalog import parse_buffers  # noqa: E402
from deployer.core.fit.memory import (  # noqa: E402
    FitSettings,
    MachineSpec,
    as_run,
    compute_bytes,
    estimate_memory,
    kv_bytes,
    recurrent_bytes,
)
from deployer.core.units import MIB  # noqa: E402
from tests.integration import (  # noqa: E402
    test_fit_arch_attention,
    test_fit_arch_dense,
    test_fit_arch_moe,
    test_fit_arch_more,
    test_fit_arch_other,
    test_fit_arch_popular,
    test_fit_arch_recent_moe,
    test_fit_arch_recurrent,
    test_fit_architectures,
)

Builder = Callable[[Path], Path]
SETTINGS = [(8192, 2, True), (4096, 1, False), (8192, 16, True)]
CPU = MachineSpec(kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
                  host_budget_bytes=2**34, cpu_threads=2)  # fmt: skip
OUT = REPO / "benchmarks" / "results" / "arch_check.json"


def builders() -> list[tuple[Builder, tuple[str, ...]]]:
    """Every builder, with the extra llama-server arguments its model needs."""
    t = test_fit_architectures
    out: list[tuple[Builder, tuple[str, ...]]] = [
        (b, ())
        for b in (t.qwen35, t.llama_with_window, t.gemma4, t.deepseek2_mla,
                  t.deepseek2_per_head, t.deepseek32, t.deepseek4)
    ]  # fmt: skip
    out += [(b, ()) for b in test_fit_arch_attention.BUILDS]
    out += [(b, ()) for b in test_fit_arch_moe.GENERATIVE]
    out += [(b, ("--embedding",)) for b in test_fit_arch_moe.EMBEDDING]
    out += [(b, ()) for b in test_fit_arch_recurrent.BUILDERS]
    out += [(b, ()) for b in test_fit_arch_dense.BUILDERS]
    out += [(b, ()) for b in test_fit_arch_more.BUILDERS]
    out += [(b, ("--embedding",)) for b in test_fit_arch_more.EMBEDDING]
    out += [(b, ()) for b in test_fit_arch_popular.BUILDERS]
    out += [(b, ()) for b in test_fit_arch_other.BUILDERS]
    out += [(b, ()) for b in test_fit_arch_recent_moe.BUILDERS]
    out += [(b, ("--embedding",)) for b in test_fit_arch_recent_moe.DIFFUSION]
    return out


def _log(build: Builder, path: Path, args: list[str]) -> str:
    if build is test_fit_arch_recurrent.plamo2:  # never healthy on this build's CPU backend
        return test_fit_arch_recurrent._log_until_reserved(path, args)
    return run_server(path, args).log


def measure(
    build: Builder, extra: tuple[str, ...], ctx: int, slots: int, fa: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "m.gguf")
        facts = facts_from_gguf(path)
        arch, s = facts.arch, FitSettings(ctx=ctx, parallel=slots, flash_attention=fa)
        served_fa = as_run(arch, s).flash_attention  # as deployer renders it (PLM: off)
        args = ["-c", str(ctx), "-np", str(slots), "-fa", "on" if served_fa else "off",
                "--fit", "off", "-t", "2", *extra]  # fmt: skip
        logged = parse_buffers(_log(build, path, args).split("loaded meta data")[-1])
    layers = range(arch.n_layer)
    plan = {
        "cache": kv_bytes(arch, layers, s) + recurrent_bytes(arch, layers, s),
        "weights": estimate_memory(facts, s, CPU).host.logged_weights_bytes,
        "compute": compute_bytes(arch, s),
    }
    log = {
        "cache": logged.cache("host"),
        "weights": logged.get("host", "model"),
        "compute": logged.get("host", "compute"),
    }
    return {
        "builder": build.__name__,
        "arch": arch.architecture,
        "ctx": ctx,
        "slots": slots,
        "flash_attention": fa,
        **{f"{k}_log_mib": round(v / MIB, 2) for k, v in log.items()},
        **{f"{k}_plan_mib": round(v / MIB, 2) for k, v in plan.items()},
        # KV and RS are logged apart, each to 0.01 MiB
        "cache_ok": abs(plan["cache"] - log["cache"]) <= 0.02 * MIB,
        "weights_ok": abs(plan["weights"] - log["weights"]) <= 0.02 * MIB,
        "compute_ok": plan["compute"] >= log["compute"],
    }


# Known misses (docs/fit.md, "Small files"): the logged figure only, or a fraction of a MiB.
_SPAN = "mapped: CPU_Mapped spans skipped MTP tensors, which the plan leaves out"
KNOWN = {
    "step35": _SPAN,
    "hy_v3": _SPAN,
    "glm_dsa": _SPAN,
    "cohere2moe": _SPAN,
    "mimo2": "without flash attention: 0.24 MiB under (96-wide K heads)",
}


def _known(r: dict[str, Any]) -> str:
    """The known reason a missed row misses, or ""."""
    if KNOWN.get(r["builder"]) == _SPAN and not r["weights_ok"]:
        return _SPAN
    if r["builder"] == "mimo2" and not r["flash_attention"] and not r["compute_ok"]:
        return KNOWN["mimo2"]
    return ""


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| file | arch | ctx x slots, FA | cache | weights | compute (plan over) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        over = r["compute_plan_mib"] - r["compute_log_mib"]
        lines.append(
            f"| {r['builder']} | {r['arch']} | {r['ctx']} x {r['slots']}, "
            f"{'on' if r['flash_attention'] else 'off'} | "
            f"{r['cache_log_mib']:.2f} / {r['cache_plan_mib']:.2f} | "
            f"{r['weights_log_mib']:.2f} / {r['weights_plan_mib']:.2f} | "
            f"{r['compute_log_mib']:.2f} / {r['compute_plan_mib']:.2f} ({over:+.2f}) |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated builder names")
    ns = ap.parse_args()
    only = {n for n in ns.only.split(",") if n}
    rows = []
    for build, extra in builders():
        if only and build.__name__ not in only:
            continue
        for ctx, slots, fa in SETTINGS:
            rows.append(measure(build, extra, ctx, slots, fa))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    for r in rows:
        r["known"] = _known(r)
    missed = [
        r
        for r in rows
        if not (r["cache_ok"] and r["weights_ok"] and r["compute_ok"]) and not r["known"]
    ]
    summary = {
        "files": len({r["builder"] for r in rows}),
        "settings": len(rows),
        "off_target": len(missed),
        "known": sum(1 for r in rows if r["known"]),
        "compute_over_max_mib": round(
            max((r["compute_plan_mib"] - r["compute_log_mib"] for r in rows), default=0.0), 2
        ),
    }
    print(table(rows))
    print(json.dumps(summary))
    if not only:
        OUT.write_text(
            json.dumps(
                {
                    "benchmark": "arch_check",
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "summary": summary,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
