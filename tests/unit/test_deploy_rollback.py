"""Deploy's rollback, against in-memory seams: every way a deploy can fail leaves no container,
no volume it made, no record and no key; a deploy that succeeds keeps all three."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deployer.core.errors import (
    ContainerExited,
    EngineUnavailable,
    HealthTimeout,
    NameInUse,
    NativeHealthTimeout,
    SmokeTestFailed,
)
from deployer.core.fit.plan import PlanResult
from deployer.core.serve.deploy import (
    DeployResult,
    check_name_free,
    deploy,
    deploy_native,
    deploy_ollama,
)
from deployer.core.serve.proof import SmokeKind, SmokeResult
from deployer.core.serve.render import RenderedBundle, render_plan
from deployer.core.serve.servers import ATTEMPT_LABEL
from deployer.core.state.records import DeploymentRecord, now_iso
from tests.unit.in_memory import MemoryClock, MemoryEngine, MemoryRecordStore, MemorySecretStore
from tests.unit.test_render_golden import plan_for, render_variant

NAME = "llama-3-1-8b-instruct"  # the default name render gives the catalog model


@dataclass
class Seams:
    """One deploy's in-memory world."""

    engine: MemoryEngine
    records: MemoryRecordStore
    keys: MemorySecretStore
    clock: MemoryClock
    smoked: list[str | None] = field(default_factory=list)
    smoke_error: BaseException | None = None

    def smoke(
        self, endpoint: str, *, model: str, api_key: str | None, kind: SmokeKind = "chat"
    ) -> SmokeResult:
        """Record the key the proof was sent with; fail when told to."""
        self.smoked.append(api_key)
        if self.smoke_error is not None:
            raise self.smoke_error
        return SmokeResult("hi", 2, 0.1, 10.0, 20.0, kind=kind)


@pytest.fixture
def seams() -> Seams:
    clock = MemoryClock()
    return Seams(MemoryEngine(clock), MemoryRecordStore(), MemorySecretStore(), clock)


@pytest.fixture(scope="module")
def exposed() -> tuple[PlanResult, RenderedBundle]:
    """A llama.cpp bundle with an API key (--expose), planned from the catalog."""
    return plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "llamacpp"), render_variant(
        "llamacpp-compose-nvidia-expose"
    )


def _deploy(s: Seams, planned: tuple[PlanResult, RenderedBundle]) -> DeployResult:
    result, bundle = planned
    key = s.keys.write_api_key(bundle.name)
    return deploy(
        result=result,
        bundle=bundle,
        engine=s.engine,
        smoke=s.smoke,
        model_files=["/srv/models/w.gguf"],
        api_key_file=key,
        image_source="test",
        records=s.records,
        keys=s.keys,
        clock=s.clock,
    )


def _left_nothing(s: Seams) -> None:
    assert s.engine.containers == {}
    assert s.records.records == {}
    assert s.keys.keys == {}
    assert s.records.ports == {}  # a failed attempt does not claim its port either


def test_a_proven_deploy_keeps_container_record_and_key(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    done = _deploy(seams, exposed)
    (cid,) = seams.engine.containers
    rec = seams.records.records[NAME]
    assert rec.container_id == cid and done.record == rec
    assert rec.api_key_path == str(seams.keys.api_key_path(NAME))
    assert seams.smoked == [f"key-{NAME}"]  # the proof used the key the server reads
    assert seams.keys.discarded == [] and seams.records.ports == {NAME: rec.port}
    assert done.seconds == 0.0  # the memory clock never moved


@pytest.mark.parametrize(
    "error",
    [EngineUnavailable("no daemon"), OSError("image pull failed")],
    ids=["engine-refused", "os-error"],
)
def test_failure_at_create_leaves_nothing(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle], error: Exception
) -> None:
    seams.engine.fail_run = error
    with pytest.raises(type(error)):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert seams.smoked == []


def test_failure_at_start_removes_the_created_container(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    # The engine made the container, then starting it failed: deploy never got its id and
    # finds it by this attempt's label.
    seams.engine.fail_after_create = ContainerExited(NAME, 1)
    with pytest.raises(ContainerExited):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert len(seams.engine.removed) == 1 and seams.clock.slept == []  # no wait for an Exception


def test_health_timeout_leaves_nothing(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    def too_slow() -> None:
        raise HealthTimeout(NAME, 5.0, "starting")

    seams.engine.on_wait = too_slow
    with pytest.raises(HealthTimeout):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert len(seams.engine.removed) == 1


def test_smoke_failure_leaves_nothing(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    seams.smoke_error = SmokeTestFailed("http://127.0.0.1:1", "empty reply")
    with pytest.raises(SmokeTestFailed):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert seams.keys.discarded == [seams.keys.api_key_path(NAME)]


def test_a_failed_record_write_removes_the_proven_container(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    seams.records.fail_save = OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        _deploy(seams, exposed)
    _left_nothing(seams)


def test_ctrl_c_during_the_proof_leaves_nothing(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    seams.smoke_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams, exposed)
    _left_nothing(seams)


def test_ctrl_c_inside_creation_waits_for_the_late_container(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    # Interrupted while the engine still creates it: the container shows up only later, and
    # deploy polls (on its clock) for up to a second for it.
    seams.engine.fail_after_create = KeyboardInterrupt()
    seams.engine.hide_for_s = 0.35
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert 0.3 <= sum(seams.clock.slept) <= 0.5 and set(seams.clock.slept) == {0.1}


def test_ctrl_c_inside_creation_gives_up_after_a_second(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    seams.engine.fail_run = KeyboardInterrupt()  # nothing was made
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams, exposed)
    _left_nothing(seams)
    assert seams.clock.now - 1000.0 == pytest.approx(1.0)  # one second, never longer


def test_cleanup_spares_other_attempts_containers(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    _, bundle = exposed
    other = seams.engine.run_container(spec=bundle.container_spec())  # no attempt label of ours
    seams.engine.fail_after_create = ContainerExited(NAME, 1)
    with pytest.raises(ContainerExited):
        _deploy(seams, exposed)
    assert list(seams.engine.containers) == [other]
    assert ATTEMPT_LABEL not in seams.engine.containers[other].labels


def test_a_name_in_use_is_refused_before_anything_is_made(
    seams: Seams, exposed: tuple[PlanResult, RenderedBundle]
) -> None:
    result, bundle = exposed
    rec = DeploymentRecord(
        NAME, "m", "Q4_K_M", "llamacpp", "container", "http://127.0.0.1:1", 1, now_iso()
    )
    seams.records.save(rec)
    with pytest.raises(NameInUse):
        check_name_free(NAME, seams.engine, records=seams.records)
    with pytest.raises(NameInUse):
        deploy(result=result, bundle=bundle, engine=seams.engine, smoke=seams.smoke,
               model_files=[], api_key_file=None, image_source="test", records=seams.records,
               keys=seams.keys, clock=seams.clock)  # fmt: skip
    assert seams.engine.containers == {} and seams.records.records == {NAME: rec}


# --- Ollama: the volumes this attempt made go too ------------------------------------------------
def _create(endpoint: str, **kw: Any) -> dict[str, Any]:
    return {"version": "0", "digest": "sha256:0", "uploaded": True}


def _deploy_ollama(s: Seams, create: Callable[..., dict[str, Any]] = _create) -> DeployResult:
    result = plan_for("llama-3.1-8b-instruct", "nvidia-a10g-24gb", "ollama")
    bundle = render_variant("ollama-compose-nvidia")
    return deploy_ollama(result=result, bundle=bundle, engine=s.engine, create=create,
                         smoke=s.smoke, model_path=Path("/srv/models/w.gguf"), model_files=[],
                         image_source="test", records=s.records, clock=s.clock)  # fmt: skip


def test_ollama_success_keeps_its_volume(seams: Seams) -> None:
    done = _deploy_ollama(seams)
    assert list(seams.engine.volumes) == done.record.volumes and seams.records.records


def test_ollama_failure_removes_the_volume_it_made(seams: Seams) -> None:
    seams.smoke_error = SmokeTestFailed("http://127.0.0.1:1", "no reply")
    with pytest.raises(SmokeTestFailed):
        _deploy_ollama(seams)
    assert seams.engine.volumes == {} and seams.engine.containers == {}
    assert seams.records.records == {}


def test_ollama_failure_keeps_a_volume_it_reused(seams: Seams) -> None:
    seams.engine.volumes["deployer-llama-3-1-8b-instruct-ollama"] = NAME  # an earlier store
    seams.smoke_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _deploy_ollama(seams)
    assert list(seams.engine.volumes) == ["deployer-llama-3-1-8b-instruct-ollama"]
    assert seams.engine.containers == {} and seams.records.records == {}


# --- Native: the process stops, the key goes, the log stays --------------------------------------
@dataclass
class _Started:
    pid: int = 4242
    create_time: float = 1.0
    log_path: str = "/memory/log"


@dataclass
class MemoryProcesses:
    """The native process runtime in memory."""

    running: dict[int, str] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    fail_wait: BaseException | None = None

    def start(self, *, name: str, argv: list[str], log_path: Path) -> _Started:
        self.running[4242] = name
        return _Started()

    def wait_healthy(self, *, name: str, proc: Any, endpoint: str, timeout_s: float,
                     on_progress: Callable[[float, str], None] | None = None) -> None:  # fmt: skip
        if self.fail_wait is not None:
            raise self.fail_wait

    def stop(self, *, pid: int, create_time: float | None, timeout_s: float = 10.0) -> str:
        self.running.pop(pid, None)
        return "stopped"

    def forget(self, *, name: str) -> None:
        self.forgotten.append(name)


def _deploy_native(s: Seams, procs: MemoryProcesses) -> DeployResult:
    result = plan_for("llama-3.1-8b-instruct", "cpu-x86-2c-8gb", "llamacpp")
    key = s.keys.write_api_key(NAME, for_container=False)
    bundle = render_plan(result, backend="llamacpp", target="systemd",
                         model_path=Path("/srv/models/w.gguf"), port=18080, expose=True,
                         name=NAME, binary="/usr/bin/llama-server", api_key_file=key)  # fmt: skip
    return deploy_native(result=result, bundle=bundle, runtime=procs, smoke=s.smoke,
                         model_files=[], api_key_file=key, log_path=Path("/memory/log"),
                         records=s.records, keys=s.keys, clock=s.clock)  # fmt: skip


def test_native_success_keeps_process_record_and_key(seams: Seams) -> None:
    procs = MemoryProcesses()
    done = _deploy_native(seams, procs)
    assert procs.running == {4242: NAME} and done.record.pid == 4242
    assert seams.records.records[NAME].log_path == "/memory/log" and seams.keys.keys


@pytest.mark.parametrize("where", ["health", "smoke", "ctrl-c"])
def test_native_failure_stops_the_process_and_removes_the_key(seams: Seams, where: str) -> None:
    procs = MemoryProcesses()
    if where == "health":
        procs.fail_wait = NativeHealthTimeout(NAME, 5.0, "loading", "/memory/log")
    else:
        seams.smoke_error = (
            KeyboardInterrupt() if where == "ctrl-c" else SmokeTestFailed("http://x", "no")
        )
    with pytest.raises((NativeHealthTimeout, SmokeTestFailed, KeyboardInterrupt)):
        _deploy_native(seams, procs)
    assert procs.running == {} and procs.forgotten == [NAME]
    assert seams.records.records == {} and seams.keys.keys == {}
