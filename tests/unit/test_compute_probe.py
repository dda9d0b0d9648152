"""The compute buffer the plan counts, against every buffer llama-server 11434 logged for the
two-layer variants of benchmarks/compute_probe.py (benchmarks/results/compute_probe.json: seven
architectures, one knob changed at a time, flash attention on at one slot and off at four):
never under, since a buffer under its log is memory the server takes that the plan did not."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from deployer.adapters.gguf_files import facts_from_gguf
from deployer.core.fit.memory import FitSettings, compute_bytes
from deployer.core.units import MIB

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from compute_probe import RESULTS, variants, write
from shapes import shape_named

ROWS = [r for r in json.loads(RESULTS.read_text())["rows"] if r["logged"]]


def test_the_probe_covers_several_architectures_both_ways() -> None:
    assert len({r["arch"] for r in ROWS}) >= 6
    assert {r["fa"] for r in ROWS} == {"on", "off"}


@pytest.mark.parametrize(
    "row", ROWS, ids=lambda r: f"{r['base']}-{r['variant']}-fa{r['fa']}-np{r.get('parallel', 1)}"
)
def test_the_planned_compute_buffer_is_never_under_the_log(
    row: dict[str, Any], tmp_path: Path
) -> None:
    shape = dict(variants(shape_named(row["base"])))[row["variant"]]
    arch = facts_from_gguf(write(shape, tmp_path / "probe.gguf")).arch
    s = FitSettings(
        ctx=row["ctx"], parallel=row.get("parallel", 1), n_ubatch=row["ubatch"],
        flash_attention=row["fa"] == "on",
    )  # fmt: skip
    assert compute_bytes(arch, s) >= row["logged"] - 0.05 * MIB
