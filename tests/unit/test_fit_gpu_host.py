"""The host side of a fully offloaded CUDA server, as measured under a memory cgroup
(benchmarks/fit_gpu.py --host-caps, benchmarks/results/fit_gpu_host.json; docs/fit.md "The host
side of a GPU server"): the plan, recomputed with today's code from each measured shape's
header, must hold at least the smallest cap the server ran under, since a container's memory
limit is made from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.cli import wiring
from deployer.core.fit import memory
from deployer.core.fit.plan import evaluate_option, machine_spec
from deployer.core.hardware.profiles import get_profile
from deployer.core.units import MIB

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fit_gpu import HOST_GRID, HOST_RESULTS, estimates, gpu
from fit_gpu import RESULTS as DEVICE_RESULTS
from shapes import build

RESULTS = json.loads(HOST_RESULTS.read_text())
ROWS = [r for r in RESULTS["rows"] if r.get("cap")]


def _plan_host_total(row: dict[str, Any], work: Path) -> int:
    wiring.install_data_source()
    (setting,) = [
        s for s in HOST_GRID
        if (s.ctx, s.slots, s.kv, s.fa, s.ub, s.mmap)
        == (row["ctx"], row["slots"], row["kv_type"], row["flash_attention"], row["ubatch"],
            row["mmap"])
    ]  # fmt: skip
    profile = get_profile(RESULTS["meta"]["profile"])
    facts = facts_from_gguf(build(row["model"], work))
    plan = evaluate_option(facts, setting.fit_settings(), profile, machine_spec(profile))
    assert plan.full_offload  # every layer offloaded, as measured
    return plan.memory.host.total_bytes


def test_there_is_a_measured_row() -> None:
    assert ROWS, "benchmarks/results/fit_gpu_host.json has no row with a cap"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['model']}-{r['ctx']}x{r['slots']}")
def test_the_plan_holds_the_smallest_cap_a_gpu_server_ran_under(
    row: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = _plan_host_total(row, tmp_path)
    assert total >= row["cap"], (total, row["cap"])
    # The runtime's allowance is what covers it: the buffers and process alone fall short.
    monkeypatch.setattr(memory, "GPU_RUNTIME_HOST_BYTES", 0)
    assert _plan_host_total(row, tmp_path) < row["cap"]


DEVICE = json.loads(DEVICE_RESULTS.read_text())
DEVICE_ROWS = [r for r in DEVICE["rows"] if not r.get("error")]


@pytest.mark.parametrize(
    "row", DEVICE_ROWS,
    ids=lambda r: f"{r['model']}-{r['ctx']}x{r['slots']}-{r['kv_type']}-fa{int(r['flash_attention'])}",
)  # fmt: skip
def test_the_pinned_host_staging_is_what_the_h200_logged(
    row: dict[str, Any], tmp_path: Path
) -> None:
    """CUDA_Host compute of a fully offloaded server: embedding rows, masks and, without flash
    attention, the V-cache indices (llama_kv_cache::build_input_v_idxs), which the plan left
    out until they were found 1-12 MiB under on all 14 shapes (the rows read off, in-sample)."""
    wiring.install_data_source()
    s = gpu(row["ctx"], row["slots"], row["kv_type"], row["flash_attention"])
    est = estimates(build(row["model"], tmp_path), s, get_profile(DEVICE["meta"]["profile"]), 1)
    assert abs(est["host_compute_est"] - row["host_compute_real"]) <= 0.6 * MIB, (
        est["host_compute_est"] / MIB,
        row["host_compute_real"] / MIB,
    )
