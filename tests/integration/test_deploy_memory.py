"""The plan is the limit, on a real engine: the demo deployed under its own plan's memory limit
answers; under a limit 20% below the plan (less its room for context checkpoints, which a
fresh server has not filled) it fails in one line that names the OOM, the plan's
figure, the limit and the observed peak, and leaves nothing behind. Anonymous weights
(--load-mode none) make the shortfall an OOM kill rather than a page-cache thrash."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
from typer.testing import CliRunner

from deployer.adapters.docker_engine import DockerEngine
from deployer.cli import wiring
from deployer.cli.app import app
from deployer.core.hardware.profiles import get_profile
from deployer.core.serve.limits import resource_limits
from deployer.core.units import MIB
from tests.integration.loopback import free_port

pytestmark = pytest.mark.docker

PROFILE = "cpu-x86-2c-8gb"


def _plan_bytes(load_mode: str, prompt_cache_mib: int = 0) -> int:
    plan = wiring.plan_for("demo", get_profile(PROFILE), quant=None, ctx=None, parallel=1,
                           kv_type="f16", backend="llamacpp", load_mode=load_mode,
                           prompt_cache_mib=prompt_cache_mib)  # fmt: skip
    return plan.chosen.memory.host.total_bytes


def _deploy(name: str, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(
        app,
        ["deploy", "demo", "--profile", PROFILE, "--name", name, "--port", str(free_port()),
         "--load-mode", "none", "--timeout", "120", "--json", *args],
    )  # fmt: skip
    return r.exit_code, r.stdout, r.stderr


def test_demo_answers_under_its_own_plans_limit(engine: DockerEngine, runtime_image: str) -> None:
    code, out, err = _deploy("t-mem-plan")
    try:
        assert code == 0, err
        got = json.loads(out)
        assert got["smoke"]["completion_tokens"] > 0
        host = engine.client().containers.get(got["container_id"]).attrs["HostConfig"]
        plan = wiring.plan_for("demo", get_profile(PROFILE), quant=None, ctx=None, parallel=1,
                               kv_type="f16", backend="llamacpp", load_mode="none")  # fmt: skip
        assert host["Memory"] == resource_limits(plan).memory_limit_bytes
        # the limit is the plan plus max(64 MiB, 5%), not the plan plus the file
        assert host["Memory"] - _plan_bytes("none") <= 66 * MIB
    finally:
        CliRunner().invoke(app, ["down", "t-mem-plan"])


def test_a_limit_20_percent_under_the_plan_fails_naming_oom(
    engine: DockerEngine, runtime_image: str
) -> None:
    plan = _plan_bytes("none")
    # 20% under what a fresh server holds: the plan less its room for context checkpoints
    # (the demo has sliding-window layers), which a server that has answered nothing yet and
    # this deploy's one proof do not fill.
    result = wiring.plan_for("demo", get_profile(PROFILE), quant=None, ctx=None, parallel=1,
                             kv_type="f16", backend="llamacpp", load_mode="none")  # fmt: skip
    fresh = plan - result.chosen.memory.host.checkpoint_bytes
    limit_mib = math.floor(fresh * 0.8 / MIB)
    code, _, err = _deploy("t-mem-oom", "--memory-limit", f"{limit_mib}M")
    assert code == 1, err
    line = [t for t in err.splitlines() if t.startswith("error:")]
    assert len(line) == 1, err
    text = line[0]
    assert "OOM-killed" in text or "memory pressure" in text, text
    assert f"the plan needs {plan / MIB:.1f} MiB" in text, text
    assert f"the memory limit was {limit_mib:.1f} MiB" in text, text
    assert "observed peak" in text and "Deploy without --memory-limit" in text, text
    assert f"warning: --memory-limit {limit_mib:.1f} MiB is under the plan's" in err
    assert "Traceback" not in err
    assert "t-mem-oom" not in {c.name for c in engine.list_deployer_containers()}


def test_a_prompt_cache_is_rendered_and_held_inside_the_limit(
    engine: DockerEngine, runtime_image: str
) -> None:
    # --prompt-cache 96 (above the limit's 64 MiB of headroom): the plan grows by 96 MiB, the
    # container's limit with it, the server runs with --cache-ram 96, and distinct prompts
    # (each one's state saved as the next arrives) fill the cache until it turns over, inside
    # the limit: the server keeps answering.
    code, out, err = _deploy("t-mem-cache", "--prompt-cache", "96")
    try:
        assert code == 0, err
        got = json.loads(out)
        container = engine.client().containers.get(got["container_id"])
        args = container.attrs["Config"]["Cmd"] or []
        assert args[args.index("--cache-ram") + 1] == "96"
        grown = _plan_bytes("none", 96) - _plan_bytes("none")
        assert 96 * MIB <= grown <= 97 * MIB
        plan = wiring.plan_for("demo", get_profile(PROFILE), quant=None, ctx=None, parallel=1,
                               kv_type="f16", backend="llamacpp", load_mode="none",
                               prompt_cache_mib=96)  # fmt: skip
        assert container.attrs["HostConfig"]["Memory"] == resource_limits(plan).memory_limit_bytes
        url = got["endpoint"].rstrip("/") + "/completion"
        for i in range(24):
            ids = [1000 + (i * 7919 + j * 31) % 200000 for j in range(500)]
            body = json.dumps(
                {"prompt": ids, "n_predict": 2, "cache_prompt": True, "ignore_eos": True}
            ).encode()
            req = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=120) as r:
                assert json.loads(r.read())["tokens_predicted"] == 2
        logs = container.logs().decode(errors="replace")
        assert "removing oldest entry" in logs  # the cache was full and turned over
        container.reload()
        assert container.status == "running" and not container.attrs["State"]["OOMKilled"]
    finally:
        CliRunner().invoke(app, ["down", "t-mem-cache"])
