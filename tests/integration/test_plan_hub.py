"""`deployer plan hf://...` end to end: real huggingface_hub client, loopback Hub, header only."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from deployer.adapters.local_models import demo_model_path
from deployer.cli.app import app
from tests.integration.hubserver import LoopbackHub


def test_plan_hf_reference_reads_only_the_header(hub: LoopbackHub) -> None:
    demo = demo_model_path()
    hub.add_repo("acme/gemma-mini", {"gemma-mini-Q4_K_M.gguf": demo})
    ref = "hf://acme/gemma-mini:Q4_K_M"
    result = CliRunner().invoke(app, ["plan", ref, "--profile", "cpu-x86-16c-64gb", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    local = json.loads(
        CliRunner()
        .invoke(app, ["plan", str(demo), "--profile", "cpu-x86-16c-64gb", "--json"])
        .stdout
    )
    assert got["layout_exact"] is True and got["quant"] == "Q4_K_M"
    assert got["memory"] == local["memory"]
    assert got["file_bytes"] == demo.stat().st_size
    assert hub.served("acme/gemma-mini", "gemma-mini-Q4_K_M.gguf") < 16 * 1024 * 1024


def test_plan_hf_unknown_repo_is_one_line(hub: LoopbackHub, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", "hf://acme/nothing", "--profile", "cpu-x86-16c-64gb"])
    assert result.exit_code == 1
    assert "acme/nothing" in result.stderr and "Traceback" not in result.output
