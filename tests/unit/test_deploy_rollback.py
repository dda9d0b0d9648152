"""Deploy's rollback, through the one deploy path (deploy_model) against in-memory seams:
every way a deploy can fail leaves no container, no volume it made, no record and no key file;
a deploy that succeeds keeps all of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from deployer.adapters.clock import SystemClock
from deployer.core.errors import (
    ContainerExited,
    EngineUnavailable,
    HealthTimeout,
    NameInUse,
    NativeHealthTimeout,
    SmokeTestFailed,
)
from deployer.core.fit.plan import PlanResult
from deployer.core.hardware.profiles import Profile, get_profile
from deployer.core.model.catalog import get_model
from deployer.core.model.ref import CatalogRef, ModelRef
from deployer.core.model.resolve import RemoteFile
from deployer.core.pull.files import RepoListing
from deployer.core.serve.containers import ContainerEngine
from deployer.core.serve.deploy import DeployResult, check_name_free
from deployer.core.serve.deploy_flow import DeployEdges, DeployRequest, DryRun, deploy_model
from deployer.core.serve.prepare import PlanInputs, WeightsLocation
from deployer.core.serve.proof import SmokeKind, SmokeResult
from deployer.core.serve.servers import ATTEMPT_LABEL, ProcessRuntime
from deployer.core.state.records import DeploymentRecord, iso_seconds
from tests.unit.in_memory import (
    MemoryClock,
    MemoryEngine,
    MemoryFiles,
    MemoryHost,
    MemoryHubStore,
    MemoryRecordStore,
    MemorySecretStore,
)
from tests.unit.test_render_golden import plan_for, render_variant

MODEL = "llama-3.1-8b-instruct"
NAME = "llama-3-1-8b-instruct"  # the default name deploy gives the catalog model
GPU_PROFILE = "nvidia-a10g-24gb"
CPU_PROFILE = "cpu-x86-16c-64gb"
PORT = 18080


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


def _listing() -> RepoListing:
    """The catalog model's files, every quant, as a Hub that has them would list them."""
    entry = get_model(MODEL)
    files = [RemoteFile(qf.file, 4 << 30, "ab" * 32) for qf in entry.quants.values()]
    return RepoListing(next(iter(entry.quants.values())).repo, "c0ffee", files)


@dataclass
class Seams:
    """One deploy's in-memory world."""

    engine: MemoryEngine
    records: MemoryRecordStore
    keys: MemorySecretStore
    clock: MemoryClock
    host: MemoryHost = field(default_factory=MemoryHost)
    files: MemoryFiles = field(default_factory=MemoryFiles)
    procs: MemoryProcesses = field(default_factory=MemoryProcesses)
    hub: MemoryHubStore = field(default_factory=lambda: MemoryHubStore(_listing()))
    smoked: list[str | None] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    image: str | None = None  # what choose_image picks (None: the official one)
    said: list[str] = field(default_factory=list)
    smoke_error: BaseException | None = None

    def smoke(
        self, endpoint: str, *, model: str, api_key: str | None, kind: SmokeKind = "chat"
    ) -> SmokeResult:
        """Record the key the proof was sent with; fail when told to."""
        self.smoked.append(api_key)
        if self.smoke_error is not None:
            raise self.smoke_error
        return SmokeResult("hi", 2, 0.1, 10.0, 20.0, kind=kind)

    def create(self, endpoint: str, **kw: Any) -> dict[str, Any]:
        """Ollama's model creation, which always works here."""
        self.created.append(kw["name"])
        return {"version": "0", "digest": "sha256:0", "uploaded": True}

    def edges(self) -> DeployEdges:
        """Every edge deploy_model talks to, in memory."""
        seams = self

        class Ports:
            def choose(self, name: str, requested: int | None, host_ip: str) -> tuple[int, str]:
                return requested or PORT, "test"

            def check_free(self, host_ip: str, port: int) -> None:
                return None

        class Native:
            def binary(self) -> Path:
                return Path("/usr/bin/llama-server")

            def supervisor(self) -> ProcessRuntime:
                return seams.procs

            def log_path(self, name: str) -> Path:
                return Path("/memory/log")

        def planner(ref: ModelRef, prof: Profile, **_: Any) -> PlanResult:
            return plan_for(ref.text, prof.id, _["backend"])

        def choose_image(
            engine: ContainerEngine, official: str, kind: str, given: str | None, backend: str
        ) -> tuple[str, str]:
            return self.image or official, "test"

        def locate(ref: ModelRef, facts: Any) -> WeightsLocation:
            raise AssertionError("a deploy locates the weights it pulled")

        return DeployEdges(
            planner=planner, ports=Ports(), hub_store=lambda: self.hub,
            engine=lambda: self.engine, choose_image=choose_image, locate_weights=locate,
            keys=self.keys, records=self.records, clock=self.clock, host=self.host, files=self.files,
            native=Native(), llama_smoke=self.smoke, ollama_smoke=self.smoke,
            ollama_create=self.create, say=self.said.append,
        )  # fmt: skip


@pytest.fixture
def seams() -> Seams:
    clock = MemoryClock()
    return Seams(MemoryEngine(clock), MemoryRecordStore(), MemorySecretStore(), clock)


def _deploy(
    s: Seams, *, backend: str = "llamacpp", expose: bool = True, runtime: str = "container",
    profile: str = GPU_PROFILE,
) -> DeployResult:  # fmt: skip
    """`deployer deploy llama-3.1-8b-instruct` (with --expose: an API key) through deploy_model."""
    req = DeployRequest(
        ref=CatalogRef(MODEL), profile=get_profile(profile), inputs=PlanInputs(backend=backend),
        port=PORT, expose=expose, insecure=backend == "ollama" and expose, runtime=runtime,
        accept_license=True,
    )  # fmt: skip
    done = deploy_model(req, s.edges(), None)
    assert not isinstance(done, DryRun)
    return done


def _left_nothing(s: Seams) -> None:
    assert s.engine.containers == {}
    assert s.records.records == {}
    assert s.keys.keys == {}
    assert s.records.ports == {}  # a failed attempt does not claim its port either


def test_a_proven_deploy_keeps_container_record_and_key(seams: Seams) -> None:
    done = _deploy(seams)
    (cid,) = seams.engine.containers
    rec = seams.records.records[NAME]
    assert rec.container_id == cid and done.record == rec
    assert rec.api_key_path == str(seams.keys.api_key_path(NAME))
    assert seams.smoked == [f"key-{NAME}"]  # the proof used the key the server reads
    assert seams.keys.discarded == [] and seams.records.ports == {NAME: rec.port}
    assert done.seconds == 0.0  # the memory clock never moved


@pytest.mark.parametrize(
    ("image", "probe"),
    [("ghcr.io/ggml-org/llama.cpp:server-cuda-b11434", "curl"),
     ("deployer/llama-server:11434.0.0-cpu", "wget")],
)  # fmt: skip
def test_the_health_probe_is_one_the_chosen_image_can_run(
    seams: Seams, image: str, probe: str
) -> None:
    # The plan renders for the official image; with no registry deploy runs the local build,
    # which has busybox wget and no curl: a curl probe would leave it "unhealthy" forever.
    seams.image = image
    _deploy(seams, profile="cpu-x86-2c-8gb")
    (spec,) = seams.engine.specs
    assert spec.image == image
    assert spec.health is not None and spec.health.test[1] == probe


@pytest.mark.parametrize(
    "error",
    [EngineUnavailable("no daemon"), OSError("image pull failed")],
    ids=["engine-refused", "os-error"],
)
def test_failure_at_create_leaves_nothing(seams: Seams, error: Exception) -> None:
    seams.engine.fail_run = error
    with pytest.raises(type(error)):
        _deploy(seams)
    _left_nothing(seams)
    assert seams.smoked == []


def test_failure_at_start_removes_the_created_container(seams: Seams) -> None:
    # The engine made the container, then starting it failed: deploy never got its id and
    # finds it by this attempt's label.
    seams.engine.fail_after_create = ContainerExited(NAME, 1)
    with pytest.raises(ContainerExited):
        _deploy(seams)
    _left_nothing(seams)
    assert len(seams.engine.removed) == 1 and seams.clock.slept == []  # no wait for an Exception


def test_health_timeout_leaves_nothing(seams: Seams) -> None:
    def too_slow() -> None:
        raise HealthTimeout(NAME, 5.0, "starting")

    seams.engine.on_wait = too_slow
    with pytest.raises(HealthTimeout):
        _deploy(seams)
    _left_nothing(seams)
    assert len(seams.engine.removed) == 1


def test_smoke_failure_leaves_nothing(seams: Seams) -> None:
    seams.smoke_error = SmokeTestFailed("http://127.0.0.1:1", "empty reply")
    with pytest.raises(SmokeTestFailed):
        _deploy(seams)
    _left_nothing(seams)
    assert seams.keys.discarded == [seams.keys.api_key_path(NAME)]


def test_a_failed_record_write_removes_the_proven_container(seams: Seams) -> None:
    seams.records.fail_save = OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        _deploy(seams)
    _left_nothing(seams)


def test_ctrl_c_during_the_proof_leaves_nothing(seams: Seams) -> None:
    seams.smoke_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams)
    _left_nothing(seams)


def test_ctrl_c_inside_creation_waits_for_the_late_container(seams: Seams) -> None:
    # Interrupted while the engine still creates it: the container shows up only later, and
    # deploy polls (on its clock) for up to a second for it.
    seams.engine.fail_after_create = KeyboardInterrupt()
    seams.engine.hide_for_s = 0.35
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams)
    _left_nothing(seams)
    assert 0.3 <= sum(seams.clock.slept) <= 0.5 and set(seams.clock.slept) == {0.1}


def test_ctrl_c_inside_creation_gives_up_after_a_second(seams: Seams) -> None:
    seams.engine.fail_run = KeyboardInterrupt()  # nothing was made
    with pytest.raises(KeyboardInterrupt):
        _deploy(seams)
    _left_nothing(seams)
    assert seams.clock.now - 1000.0 == pytest.approx(1.0)  # one second, never longer


def test_cleanup_spares_other_attempts_containers(seams: Seams) -> None:
    spec = render_variant("llamacpp-compose-nvidia-expose").container_spec()
    spec = replace(spec, name="other", labels={**spec.labels, "io.deployer.name": "other"})
    other = seams.engine.run_container(spec=spec)  # no attempt label of ours
    seams.engine.fail_after_create = ContainerExited(NAME, 1)
    with pytest.raises(ContainerExited):
        _deploy(seams)
    assert list(seams.engine.containers) == [other]
    assert ATTEMPT_LABEL not in seams.engine.containers[other].labels


def test_a_name_in_use_is_refused_before_anything_is_made(seams: Seams) -> None:
    rec = DeploymentRecord(
        NAME,
        "m",
        "Q4_K_M",
        "llamacpp",
        "container",
        "http://127.0.0.1:1",
        1,
        iso_seconds(SystemClock().utc_now()),
    )
    seams.records.save(rec)
    with pytest.raises(NameInUse):
        check_name_free(NAME, seams.engine, records=seams.records)
    with pytest.raises(NameInUse):
        _deploy(seams)
    assert seams.engine.containers == {} and seams.records.records == {NAME: rec}
    assert seams.keys.keys == {} and seams.hub.fetched == []  # no key made, nothing pulled


def test_a_container_of_the_name_without_a_record_is_refused_too(seams: Seams) -> None:
    spec = render_variant("llamacpp-compose-nvidia-expose").container_spec()
    other = seams.engine.run_container(spec=spec)  # labelled NAME, but no record
    with pytest.raises(NameInUse):
        _deploy(seams)
    assert list(seams.engine.containers) == [other] and seams.records.records == {}
    assert seams.keys.keys == {} and seams.hub.fetched == []


def test_each_attempt_is_labelled_and_capped_for_this_host(seams: Seams) -> None:
    seams.host.cpus = 64
    _deploy(seams)
    (info,) = seams.engine.containers.values()
    assert info.labels[ATTEMPT_LABEL] == "attempt-1"
    (spec,) = seams.engine.specs
    assert spec.pids_limit == 128 + 4 * 64  # sized for the host's CPUs, not the profile's


# --- Ollama: the volumes this attempt made go too ------------------------------------------------
def _deploy_ollama(s: Seams) -> DeployResult:
    return _deploy(s, backend="ollama", expose=False)


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
def _deploy_native(s: Seams, procs: MemoryProcesses) -> DeployResult:
    assert procs is s.procs
    return _deploy(s, runtime="native", profile=CPU_PROFILE)


def test_native_success_keeps_process_record_and_key(seams: Seams) -> None:
    procs = seams.procs
    done = _deploy_native(seams, seams.procs)
    assert procs.running == {4242: NAME} and done.record.pid == 4242
    assert seams.records.records[NAME].log_path == "/memory/log" and seams.keys.keys


@pytest.mark.parametrize("where", ["health", "smoke", "ctrl-c"])
def test_native_failure_stops_the_process_and_removes_the_key(seams: Seams, where: str) -> None:
    procs = seams.procs
    if where == "health":
        procs.fail_wait = NativeHealthTimeout(NAME, 5.0, "loading", "/memory/log")
    else:
        seams.smoke_error = (
            KeyboardInterrupt() if where == "ctrl-c" else SmokeTestFailed("http://x", "no")
        )
    with pytest.raises((NativeHealthTimeout, SmokeTestFailed, KeyboardInterrupt)):
        _deploy_native(seams, seams.procs)
    assert procs.running == {} and procs.forgotten == [NAME]
    assert seams.records.records == {} and seams.keys.keys == {}


# --- several models behind one router (deploy_several) ---------------------------------------


@dataclass
class MemoryPresets:
    """Router presets in memory: which are written, released (recorded) or discarded."""

    written: dict[str, str] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)

    def write_preset(self, name: str, text: str) -> Path:
        self.written[name] = text
        return Path(f"/memory/routers/{name}/models.ini")

    def discard(self, name: str) -> None:
        self.written.pop(name, None)

    def release(self, name: str) -> None:
        self.released.append(name)


class RacingRecords(MemoryRecordStore):
    """A record store in which another deploy of the same name records itself between the
    first name check and the second (the moment just before the container is made)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, name: str) -> DeploymentRecord | None:
        self.loads += 1
        if self.loads == 3:  # the third: the check just before the container
            self.records[name] = DeploymentRecord(
                name=name, model="other", quant="Q4_K_M", backend="llamacpp",
                runtime="container", endpoint="http://127.0.0.1:1", port=1,
                created_at="2026-01-01T00:00:00+00:00",
            )  # fmt: skip
        return super().load(name)


def _deploy_several(s: Seams, presets: MemoryPresets) -> DeployResult:
    from deployer.core.serve.multi_flow import SeveralRequest, deploy_several
    from deployer.core.serve.router import ModelEntry

    req = SeveralRequest(
        entries=[ModelEntry("a", MODEL), ModelEntry("b", MODEL)], profile=get_profile(GPU_PROFILE),
        inputs=PlanInputs(backend="llamacpp"), name="duo", port=PORT, expose=True,
        accept_license=True,
    )  # fmt: skip
    done = deploy_several(req, s.edges(), presets, None)
    assert not isinstance(done, DryRun)
    return done


def test_a_router_deploy_that_is_recorded_releases_its_preset(seams: Seams) -> None:
    presets = MemoryPresets()
    done = _deploy_several(seams, presets)
    assert done.record.name == "duo" and presets.released == ["duo"] and "duo" in presets.written
    assert seams.keys.keys and seams.engine.containers


def test_a_router_deploy_that_loses_its_name_removes_its_key_and_preset() -> None:
    clock = MemoryClock()
    s = Seams(MemoryEngine(clock), RacingRecords(), MemorySecretStore(), clock)
    presets = MemoryPresets()
    with pytest.raises(NameInUse):
        _deploy_several(s, presets)
    assert s.keys.keys == {} and presets.written == {} and presets.released == []
    assert s.engine.containers == {}
