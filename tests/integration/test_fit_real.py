"""The fit estimate against a real llama-server's allocations on the demo model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployer.core.fit.llamalog import parse_buffers
from deployer.core.fit.memory import FitSettings, MachineSpec, estimate_memory
from deployer.core.units import GIB, MIB

pytestmark = [pytest.mark.llama_server, pytest.mark.usefixtures("llama_server_prefix")]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def demo_gguf() -> Path:
    from deployer.adapters.local_models import demo_model_path

    return demo_model_path()


@pytest.mark.parametrize(
    ("ctx", "slots", "kv", "fa"),
    [(4096, 1, "f16", True), (16384, 4, "q8_0", True), (8192, 1, "f16", False)],
)
def test_estimate_matches_logged_buffers(
    demo_gguf: Path, ctx: int, slots: int, kv: str, fa: bool
) -> None:
    from _llama import run_server

    from deployer.adapters.gguf_files import facts_from_gguf

    args = [
        "-c",
        str(ctx),
        "-np",
        str(slots),
        "-fa",
        "on" if fa else "off",
        "--fit",
        "off",
        "-ctk",
        kv,
        "-ctv",
        kv if fa else "f16",
    ]
    run = run_server(demo_gguf, args)
    logged = parse_buffers(run.log.split("loaded meta data")[-1])
    s = FitSettings(
        ctx=ctx, parallel=slots, kv_type_k=kv, kv_type_v=kv if fa else "f16", flash_attention=fa
    )
    cpu = MachineSpec(
        kind="cpu",
        device_count=0,
        device_budget_bytes=0,
        device_overhead_bytes=0,
        host_budget_bytes=16 * GIB,
    )
    est = estimate_memory(facts_from_gguf(demo_gguf), s, cpu).host
    assert abs(est.logged_weights_bytes - logged.get("host", "model")) <= MIB
    assert abs(est.kv_cache_bytes - logged.get("host", "KV")) <= MIB
    real_total = logged.total("host")
    est_total = est.logged_buffers_bytes
    assert -0.02 * real_total <= est_total - real_total <= 0.03 * real_total
    # The process really holds what was allocated: RSS is at least the weights it mapped.
    assert run.rss_bytes >= est.weights_bytes * 0.9
    # ... and the plan's resident total (weights held once, plus the process) is not under it.
    assert est.total_bytes >= run.rss_bytes - logged.get("host", "model") + est.weights_bytes
