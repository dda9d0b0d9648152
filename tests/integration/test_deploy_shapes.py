"""Every benchmark architecture deployed under its own plan's memory limit answers.

One real-shaped GGUF per architecture of benchmarks/shapes.py (the smallest file of each; the
weights are holes, so each costs its header on disk, yet llama-server allocates and touches
memory as the real model would), deployed with `deployer deploy PATH` on an x86 CPU profile
(8 GB; 16 GB for DeepSeek-V2-Lite and Command R7B) with the default load mode
(memory-mapped): the container carries the plan's limit, the server loads, turns healthy and
answers the smoke test inside it.

Left out: the Qwen3-30B-A3B shape (17 GiB resident; it would crowd this 24 GiB machine) -
OLMoE-1B-7B stands for the MoE architectures here. Holes refault without I/O, so this proves
load and answer under the limit, not decode speed under it: benchmarks/fit_accuracy.py --caps
measures that on dense files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.adapters.docker_engine import DockerEngine
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.hardware.profiles import get_profile
from deployer.core.model.ref import parse_model_ref
from deployer.core.serve.limits import resource_limits
from tests.integration.loopback import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import shapes

pytestmark = [pytest.mark.docker, pytest.mark.llama_server]

PROFILE = "cpu-x86-2c-8gb"
# DeepSeek-V2-Lite's plan (10 GiB) and Command R7B's (6.7 GiB at its default ctx 8192, 1.1 of
# it context checkpoints) do not fit the 8 GB machine: the next x86 size up
PROFILE_FOR = {
    "deepseek-v2-lite-q4_k_m": "cpu-x86-4c-16gb",
    "command-r7b-q4_k_m": "cpu-x86-4c-16gb",
}
LEFT_OUT = {"qwen3moe"}  # see the module docstring
CTX = {"llama3.1-8b-q4_k_m": 8192}  # the setting issue 10 names; the others: the plan's default


def _one_per_architecture() -> list[str]:
    """The smallest shape of each architecture (by file size), minus LEFT_OUT."""
    best: dict[str, tuple[int, str]] = {}
    for name, shape in shapes.SHAPES.items():
        if shape.arch in LEFT_OUT:
            continue
        size = shapes.data_bytes(shapes.tensor_types(shape))
        if shape.arch not in best or size < best[shape.arch][0]:
            best[shape.arch] = (size, name)
    # and the 7B-8B that issue 10's "done when" names: it fits an 8 GB x86 machine's plan
    return [*sorted(name for _, name in best.values()), "llama3.1-8b-q4_k_m"]


@pytest.fixture(scope="module")
def shape_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("shapes")
    # the server runs as an unprivileged user: the folder chain and the files must be readable
    for folder in (out, *out.parents[:3]):
        folder.chmod(folder.stat().st_mode | 0o005)
    yield out


@pytest.mark.parametrize("name", _one_per_architecture())
def test_each_architecture_answers_under_its_plans_limit(
    name: str, shape_dir: Path, engine: DockerEngine, runtime_image: str
) -> None:
    ctx = CTX.get(name)
    profile = PROFILE_FOR.get(name, PROFILE)
    path = shapes.build(name, shape_dir)
    path.chmod(0o644)
    dep = f"t-shape-{shapes.SHAPES[name].arch}"
    r = CliRunner().invoke(
        app,
        ["deploy", str(path), "--profile", profile, "--name", dep, "--port", str(free_port()),
         "--timeout", "600", "--json", *(["--ctx", str(ctx)] if ctx else [])],
    )  # fmt: skip
    try:
        assert r.exit_code == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["smoke"]["completion_tokens"] > 0, got["smoke"]
        plan = wiring.plan_for(
            parse_model_ref(str(path)), get_profile(profile), quant=None, ctx=ctx, parallel=1,
            kv_type="f16", backend="llamacpp", load_mode=None,
        )  # fmt: skip
        host = engine.client().containers.get(got["container_id"]).attrs["HostConfig"]
        assert host["Memory"] == resource_limits(plan).memory_limit_bytes
        assert host["Memory"] >= plan.chosen.memory.host.total_bytes
    finally:
        CliRunner().invoke(app, ["down", dep])
