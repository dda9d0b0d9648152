"""A deploy that dies or stalls under its memory limit says so: OOM named, the plan's figure,
the limit, the observed peak and what to do, in one line; never a plain exit or timeout. And
every container carries the plan's memory as its limit unless --memory-limit says otherwise."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from deployer.core.errors import ContainerExited, HealthTimeout, InvalidRequest, OutOfMemory
from deployer.core.fit.plan import PlanResult
from deployer.core.serve.containers import MemoryUse
from deployer.core.serve.deploy import with_limits
from deployer.core.serve.deploy_flow import check_flags, parse_memory_limit
from deployer.core.serve.limits import headroom_for, resource_limits
from deployer.core.serve.render import RenderedBundle
from deployer.core.serve.servers import container_spec_for
from deployer.core.units import MIB
from tests.unit.test_deploy_rollback import NAME, Seams, _deploy, _left_nothing
from tests.unit.test_deploy_rollback import exposed as exposed
from tests.unit.test_deploy_rollback import seams as seams

Planned = tuple[PlanResult, RenderedBundle]


def _limit(planned: Planned) -> int:
    result, bundle = planned
    spec = with_limits(container_spec_for(bundle, None), result)
    assert spec.memory_limit_bytes is not None
    return spec.memory_limit_bytes


def test_the_plan_is_the_limit_with_stated_headroom(exposed: Planned) -> None:
    result, _ = exposed
    limits = resource_limits(result)
    host = result.chosen.memory.host.total_bytes
    assert limits.memory_request_bytes >= host
    assert limits.memory_request_bytes - host < MIB or limits.memory_request_bytes == 256 * MIB
    assert limits.memory_limit_bytes == limits.memory_request_bytes + headroom_for(
        limits.memory_request_bytes
    )
    assert _limit(exposed) == limits.memory_limit_bytes


@pytest.mark.parametrize(
    ("request_mib", "headroom_mib"), [(256, 64), (1280, 64), (1300, 65), (8000, 400)]
)
def test_headroom_is_64_mib_or_5_percent(request_mib: int, headroom_mib: int) -> None:
    assert headroom_for(request_mib * MIB) == headroom_mib * MIB


def test_an_oom_kill_is_named_with_plan_limit_and_peak(
    seams: Seams,
    exposed: Planned,
) -> None:
    def killed() -> None:
        raise ContainerExited(NAME, 137, ["llama_model_load: loading"])

    seams.engine.on_wait = killed
    # restarted by its policy: the fresh cgroup's peak says nothing of the killed attempt
    seams.engine.memory = MemoryUse(oom_killed=True, limit_bytes=300 * MIB, peak_bytes=25 * MIB)
    with pytest.raises(OutOfMemory) as err:
        _deploy(seams, exposed)
    plan = exposed[0].chosen.memory.host.total_bytes
    assert err.value.killed and err.value.plan_bytes == plan
    text = err.value.message()
    assert "was OOM-killed" in text and "memory limit was 300.0 MiB" in text
    assert "observed peak at the limit" in text and "Deploy without --memory-limit" in text
    assert "\n" not in text
    _left_nothing(seams)


def test_exit_137_under_a_limit_is_an_oom_even_after_a_restart_cleared_the_flag(
    seams: Seams,
    exposed: Planned,
) -> None:
    def killed() -> None:
        raise ContainerExited(NAME, 137)

    seams.engine.on_wait = killed
    with pytest.raises(OutOfMemory) as err:
        _deploy(seams, exposed)
    assert err.value.limit_bytes == _limit(exposed)  # the spec's, when the engine cannot say


def test_a_stall_at_the_limit_is_memory_pressure_not_a_timeout(
    seams: Seams,
    exposed: Planned,
) -> None:
    def stalled() -> None:
        raise HealthTimeout(NAME, 60.0, "starting")

    seams.engine.on_wait = stalled
    seams.engine.memory = MemoryUse(
        limit_bytes=300 * MIB, usage_bytes=289 * MIB, peak_bytes=290 * MIB, failcnt=1200
    )
    with pytest.raises(OutOfMemory) as err:
        _deploy(seams, exposed)
    assert not err.value.killed
    assert "stalled under memory pressure" in err.value.message()
    assert "observed peak 290.0 MiB" in err.value.message()
    _left_nothing(seams)


@pytest.mark.parametrize(
    "memory",
    [MemoryUse(), MemoryUse(limit_bytes=1000 * MIB, usage_bytes=400 * MIB, peak_bytes=500 * MIB)],
    ids=["unknown", "far-from-limit"],
)
def test_a_timeout_away_from_the_limit_stays_a_timeout(
    seams: Seams,
    exposed: Planned,
    memory: MemoryUse,
) -> None:
    def slow() -> None:
        raise HealthTimeout(NAME, 60.0, "starting")

    seams.engine.on_wait = slow
    seams.engine.memory = memory
    with pytest.raises(HealthTimeout):
        _deploy(seams, exposed)


def test_an_ordinary_crash_stays_a_crash(seams: Seams, exposed: Planned) -> None:
    def crashed() -> None:
        raise ContainerExited(NAME, 1, ["error: bad model"])

    seams.engine.on_wait = crashed
    with pytest.raises(ContainerExited):
        _deploy(seams, exposed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("300M", 300 * MIB), ("2G", 2048 * MIB), ("1536Mi", 1536 * MIB), ("1GiB", 1024 * MIB)],
)
def test_memory_limit_sizes(text: str, expected: int) -> None:
    assert parse_memory_limit(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "5M", "nanM", "infG", "1e400K"])
def test_memory_limit_nonsense_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a memory size of at least 6 MiB"):
        parse_memory_limit(text)


def test_memory_limit_needs_a_container() -> None:
    with pytest.raises(InvalidRequest, match="caps a container"):
        check_flags(
            backend="llamacpp", port=None, expose=False, insecure=False, timeout_s=None,
            runtime="native", memory_limit="1G",
        )  # fmt: skip


def test_deploy_cli_refuses_a_bad_memory_limit_in_one_line() -> None:
    out = CliRunner().invoke(app, ["deploy", "demo", "--memory-limit", "lots", "--dry-run"])
    assert out.exit_code == 2
    assert "--memory-limit 'lots' is not a memory size" in out.output
    assert "Traceback" not in out.output


def test_dry_run_carries_the_users_limit_and_warns_under_the_plan() -> None:
    import json

    out = CliRunner().invoke(
        app,
        ["deploy", "demo", "--profile", "cpu-x86-2c-8gb", "--memory-limit", "200M", "--dry-run",
         "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout[out.stdout.index("{") :])
    assert body["container"]["memory_limit_bytes"] == 200 * MIB
    plan = body["plan"]["memory"]["total_bytes"]
    assert f"warning: --memory-limit 200.0 MiB is under the plan's {plan / MIB:.1f} MiB" in (
        out.output
    )


def test_plan_states_how_weights_are_held() -> None:
    out = CliRunner().invoke(app, ["plan", "demo", "--profile", "cpu-x86-2c-8gb"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())  # the terminal's width wraps lines
    assert "weights: memory-mapped, " in text
    assert "of repacked copies, their mapped source pages reclaimable" in text


@pytest.mark.parametrize("mode", ["none", "mmap+mlock"])
def test_plan_and_render_agree_on_the_load_mode(mode: str, tmp_path: object) -> None:
    import json
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    planned = CliRunner().invoke(
        app, ["plan", "demo", "--profile", "cpu-x86-2c-8gb", "--load-mode", mode, "--json"]
    )
    body = json.loads(planned.stdout)
    assert body["load_mode"] == body["weights_held"] == mode
    host = body["devices"][-1]
    if mode == "none":
        assert host["weights_bytes"] == host["logged_weights_bytes"]
    else:  # the lock holds the mapping and the repacked copies
        assert host["weights_bytes"] == host["logged_weights_bytes"] > host["repack_bytes"] > 0
    out = tmp_path / "r"
    rendered = CliRunner().invoke(
        app,
        ["render", "demo", "--profile", "cpu-x86-2c-8gb", "--load-mode", mode, "--out", str(out)],
    )
    assert rendered.exit_code == 0, rendered.output
    assert f'- "--load-mode"\n      - "{mode}"' in (out / "docker-compose.yml").read_text()


def test_render_with_another_load_mode_than_the_plan_is_refused() -> None:
    from deployer.core.model.ref import parse_model_ref
    from deployer.core.serve.prepare import RenderOptions, WeightsLocation, prepare
    from tests.unit.test_render_golden import plan_for

    result = plan_for("llama-3.1-8b-instruct", "cpu-x86-2c-8gb", "llamacpp")
    with pytest.raises(
        InvalidRequest, match="rendering with --load-mode none a plan made for mmap"
    ):
        prepare(
            parse_model_ref("llama-3.1-8b-instruct"),
            result,
            name="x",
            locate=lambda _r, _f: WeightsLocation(__import__("pathlib").Path("/m.gguf")),
            options=RenderOptions(load_mode="none"),
        )
