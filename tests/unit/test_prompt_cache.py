"""--prompt-cache: llama-server's prompt cache (--cache-ram) sized by the plan, held in its limit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import deployer.cli.render  # noqa: F401  (registers `render` until app.py imports it)
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.errors import InvalidRequest
from deployer.core.fit.memory import FitSettings, MachineSpec, estimate_memory
from deployer.core.fit.plan import MAX_PROMPT_CACHE_MIB, PlanRequest, PlanResult, make_plan
from deployer.core.hardware.profiles import get_profile
from deployer.core.serve.limits import resource_limits
from deployer.core.serve.llama_flags import PINNED_BUILD
from deployer.core.serve.render import llama_server_args
from deployer.core.units import GIB, MIB

CPU = MachineSpec(
    kind="cpu", device_count=0, device_budget_bytes=0, device_overhead_bytes=0,
    host_budget_bytes=64 * GIB, cpu_threads=2,
)  # fmt: skip


def _plan(prompt_cache_mib: int, backend: str = "llamacpp") -> PlanResult:
    name, candidates, lic = wiring.plan_candidates("llama-3.1-8b-instruct", None)
    req = PlanRequest(backend=backend, prompt_cache_mib=prompt_cache_mib)
    return make_plan(name, candidates, get_profile("cpu-x86-16c-64gb"), req, license=lic)


def test_the_cache_is_host_memory_the_plan_holds() -> None:
    _, candidates, _ = wiring.plan_candidates("llama-3.1-8b-instruct", None)
    facts = candidates[0]
    off = estimate_memory(facts, FitSettings(ctx=8192), CPU).host
    on = estimate_memory(facts, FitSettings(ctx=8192, prompt_cache_mib=512), CPU).host
    assert on.prompt_cache_bytes == 512 * MIB and off.prompt_cache_bytes == 0
    # The cache, and the page tables that map it (8 B a 4 KiB page); nothing else moves.
    assert on.total_bytes - off.total_bytes == 512 * MIB + 512 * MIB // 512
    assert on.as_dict()["prompt_cache_bytes"] == 512 * MIB
    # A GPU plan keeps it on the host too: saved prompt states are host copies.
    gpu = replace(CPU, kind="gpu", device_count=1, device_budget_bytes=80 * GIB)
    on_gpu = estimate_memory(
        facts, FitSettings(ctx=8192, n_gpu_layers=99, prompt_cache_mib=512), gpu
    )
    assert on_gpu.host.prompt_cache_bytes == 512 * MIB
    assert all(d.prompt_cache_bytes == 0 for d in on_gpu.devices)


def test_plan_render_and_limit_carry_the_same_figure() -> None:
    off, on = _plan(0), _plan(1024)
    grown = on.chosen.memory.host.total_bytes - off.chosen.memory.host.total_bytes
    assert grown >= 1024 * MIB
    assert on.as_dict()["prompt_cache_mib"] == 1024 and off.as_dict()["prompt_cache_mib"] == 0
    # The container's memory request and limit grow with it.
    assert (
        resource_limits(on).memory_request_bytes - resource_limits(off).memory_request_bytes
        >= 1024 * MIB
    )
    args = llama_server_args(
        on, build=PINNED_BUILD, model_arg="/m", host="h", port=1, api_key_file=None
    )
    assert args[args.index("--cache-ram") + 1] == "1024"
    args = llama_server_args(
        off, build=PINNED_BUILD, model_arg="/m", host="h", port=1, api_key_file=None
    )
    assert args[args.index("--cache-ram") + 1] == "0"  # off unless the plan holds one


def test_a_build_without_a_prompt_cache_refuses_one() -> None:
    with pytest.raises(InvalidRequest, match="build 4000 has no prompt cache"):
        llama_server_args(
            _plan(64), build=4000, model_arg="/m", host="h", port=1, api_key_file=None
        )
    old = llama_server_args(
        _plan(0), build=4000, model_arg="/m", host="h", port=1, api_key_file=None
    )
    assert "--cache-ram" not in old and "--ctx-checkpoints" not in old


def test_the_checkpoints_the_plan_holds_are_the_ones_rendered() -> None:
    from deployer.core.fit.memory import CTX_CHECKPOINTS

    args = llama_server_args(
        _plan(0), build=PINNED_BUILD, model_arg="/m", host="h", port=1, api_key_file=None
    )
    assert args[args.index("--ctx-checkpoints") + 1] == str(CTX_CHECKPOINTS)


@pytest.mark.parametrize("mib", [-1, MAX_PROMPT_CACHE_MIB + 1])
def test_a_size_out_of_range_is_refused(mib: int) -> None:
    with pytest.raises(InvalidRequest, match="out of range"):
        _plan(mib)


def test_ollama_has_no_prompt_cache_to_size() -> None:
    with pytest.raises(InvalidRequest, match="Ollama has none"):
        _plan(64, backend="ollama")


def test_the_cli_spells_it_and_refuses_it_in_one_line() -> None:
    runner = CliRunner()
    base = ["plan", "demo", "--profile", "cpu-x86-2c-8gb"]
    off = json.loads(runner.invoke(app, [*base, "--json"]).stdout)
    on = json.loads(runner.invoke(app, [*base, "--prompt-cache", "256", "--json"]).stdout)
    host_off, host_on = off["devices"][-1], on["devices"][-1]
    assert host_on["name"] == "host" and host_on["prompt_cache_bytes"] == 256 * MIB
    assert host_on["total_bytes"] - host_off["total_bytes"] == 256 * MIB + 256 * MIB // 512
    assert on["prompt_cache_mib"] == 256
    text = runner.invoke(app, [*base, "--prompt-cache", "256"]).stdout
    assert "prompt cache: 256.0 MiB" in text and "--cache-ram" in text
    bad = runner.invoke(app, [*base, "--prompt-cache", "64", "--backend", "ollama"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) == 1 and "Ollama has none" in bad.stderr


def test_render_writes_the_flag_and_the_larger_limit(tmp_path: Path) -> None:
    def render(out: Path, *extra: str) -> str:
        r = CliRunner().invoke(
            app, ["render", "demo", "--profile", "cpu-x86-2c-8gb", "--out", str(out), *extra]
        )
        assert r.exit_code == 0, r.output
        return (out / "docker-compose.yml").read_text()

    off, on = render(tmp_path / "off"), render(tmp_path / "on", "--prompt-cache", "48")
    assert '- "--cache-ram"\n      - "48"' in on and '- "--cache-ram"\n      - "0"' in off

    def limit(text: str) -> int:
        line = next(t for t in text.splitlines() if "mem_limit:" in t)
        return int(line.split('"')[1].removesuffix("m"))

    assert limit(on) - limit(off) >= 48


def test_several_models_each_hold_their_own_cache() -> None:
    def plan(*extra: str) -> dict[str, Any]:
        r = CliRunner().invoke(
            app, ["plan", "demo", "qwen3-0.6b", "--profile", "cpu-x86-16c-64gb", *extra, "--json"]
        )
        assert r.exit_code == 0, r.output
        return dict(json.loads(r.stdout))

    off, on = plan(), plan("--prompt-cache", "32")
    assert on["prompt_cache_mib"] == 32 and on["devices"][-1]["prompt_cache_bytes"] == 32 * MIB
    assert off["prompt_cache_mib"] == 0
    assert all(m["prompt_cache_mib"] == 32 for m in on["models"])
    # Two servers loaded together: two caches in the router's set.
    grown = on["router"]["largest"]["host_bytes"] - off["router"]["largest"]["host_bytes"]
    assert grown >= 2 * 32 * MIB


def test_deploy_without_a_model_chooses_with_the_flags_it_deploys_with() -> None:
    # `deploy` without MODEL picks the largest catalog model that fits: planned with the
    # deploy's own flags, so a context, slots or a prompt cache the user names shrink the
    # choice instead of picking a model the deploy then refuses.
    from deployer.core.errors import DeployerError
    from deployer.core.serve.prepare import PlanInputs, best_catalog_model

    def fits(model: str, prof_id: str, inputs: PlanInputs) -> bool:
        name, candidates, lic = wiring.plan_candidates(model, inputs.quant)
        return make_plan(name, candidates, get_profile(prof_id), inputs.plan_request(),
                         license=lic).fits  # fmt: skip

    t4 = get_profile("nvidia-t4-16gb")
    plain = best_catalog_model(t4)
    long_ctx = PlanInputs(ctx=32768, parallel=4)
    chosen = best_catalog_model(t4, long_ctx)
    assert chosen not in (plain, "demo")  # a smaller real model, not the default
    assert fits(chosen, t4.id, long_ctx) and not fits(plain, t4.id, long_ctx)
    # A prompt cache larger than the host leaves no catalog model: the demo, as before.
    a10g = get_profile("nvidia-a10g-24gb")
    big_cache = PlanInputs(prompt_cache_mib=20 * 1024)
    assert not fits(best_catalog_model(a10g), a10g.id, big_cache)
    assert best_catalog_model(a10g, big_cache) == "demo"
    # Flags no model takes are refused in one line, not answered with the demo.
    for bad in (PlanInputs(kv_type="bogus"), PlanInputs(quant="NOPE")):
        with pytest.raises(DeployerError) as info:
            best_catalog_model(a10g, bad)
        assert "\n" not in info.value.message()


def test_a_fleet_host_budgets_its_prompt_cache_from_the_inventory() -> None:
    # deployer_prompt_cache: the host's plan holds it and its server renders --cache-ram N.
    import yaml

    from deployer.adapters.adapter_files import AdapterFiles
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.local_files import LocalDisk
    from deployer.core.errors import DeployerError
    from deployer.core.fleet.inventory import host_from_vars
    from deployer.core.fleet.run import FleetEdges, plan_one

    edges = FleetEdges(
        runner=None,  # type: ignore[arg-type]  # plan_one runs no playbook
        planner=wiring.plan_for, hub_store=wiring.hub_store, check_backend=wiring.check_backend,
        files=LocalDisk(), clock=SystemClock(), adapters=AdapterFiles(),
    )  # fmt: skip
    prof = get_profile("cpu-x86-4c-16gb")
    plans: dict[int, dict[str, Any]] = {}
    for mib in (0, 96):
        host = host_from_vars(
            "node1", {"deployer_model": "demo", "deployer_profile": prof.id,
                      "deployer_prompt_cache": str(mib)},
        )  # fmt: skip
        hp = plan_one(host, prof, "deployer/llama-server:test", edges)
        assert hp.ok, hp.reason
        command = yaml.safe_load(hp.files["docker-compose.yml"])["services"]["llama-server"][
            "command"
        ]
        assert command[command.index("--cache-ram") + 1] == str(mib)
        assert hp.plan is not None
        plans[mib] = hp.plan
    host_total = [p["devices"][-1]["total_bytes"] for p in (plans[0], plans[96])]
    # The cache itself and the page tables that map it (8 B a 4 KiB page).
    assert 96 * MIB <= host_total[1] - host_total[0] <= 96 * MIB * 1.01
    assert plans[96]["devices"][-1]["prompt_cache_bytes"] == 96 * MIB
    assert plans[96]["prompt_cache_mib"] == 96
    for bad in ("-1", "1.5", str(MAX_PROMPT_CACHE_MIB + 1), "{{ lookup('env', 'HOME') }}"):
        with pytest.raises(DeployerError) as info:
            host_from_vars("node1", {"deployer_model": "demo", "deployer_prompt_cache": bad})
        msg = info.value.message()
        assert "deployer_prompt_cache" in msg and "node1" in msg and "\n" not in msg
    # Ollama has no prompt cache to size: refused naming both variables; unset is off.
    with pytest.raises(DeployerError) as info:
        host_from_vars("node1", {"deployer_model": "demo", "deployer_backend": "ollama",
                                 "deployer_prompt_cache": 64})  # fmt: skip
    msg = info.value.message()
    assert "deployer_prompt_cache" in msg and "deployer_backend" in msg and "node1" in msg
    ollama = {"deployer_model": "demo", "deployer_backend": "ollama"}
    assert host_from_vars("node1", ollama | {"deployer_prompt_cache": 0}).prompt_cache_mib == 0
    assert host_from_vars("node1", ollama | {"deployer_prompt_cache": None}).prompt_cache_mib == 0
