"""`down` as a use case on in-memory seams: it removes exactly what is labelled for the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.core.errors import InvalidRequest, StateFileInvalid
from deployer.core.serve.containers import NAME_LABEL, ContainerInfo
from deployer.core.state.records import DeploymentRecord, PurgeResult
from deployer.core.state.teardown import DownSeams, down
from tests.unit.in_memory import MemoryEngine, MemoryRecordStore, MemorySecretStore


class FakeNatives:
    """Native servers that are all alive and stop when asked."""

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def alive(self, record: DeploymentRecord) -> bool:
        """Alive while not stopped."""
        return record.name not in self.stopped

    def health(self, endpoint: str) -> str:
        """Always healthy."""
        return "healthy"

    def stop(self, record: DeploymentRecord, *, timeout_s: float) -> str:
        """Remember the stop."""
        self.stopped.append(record.name)
        return "stopped"

    def log_path(self, name: str) -> Path:
        """Where deploy would log."""
        return Path("/memory/logs") / f"{name}.log"


def _record(name: str, keys: MemorySecretStore, **over: object) -> DeploymentRecord:
    base: dict[str, object] = {
        "name": name,
        "model": "demo",
        "quant": "Q4_K_M",
        "backend": "llamacpp",
        "runtime": "container",
        "endpoint": "http://127.0.0.1:18080",
        "port": 18080,
        "created_at": "2025-01-01T00:00:00Z",
        "volumes": [f"{name}-data"],
    }
    base.update(over)
    if "api_key_path" not in base:
        base["api_key_path"] = str(keys.write_api_key(name))
    return DeploymentRecord(**base)  # type: ignore[arg-type]


def _container(engine: MemoryEngine, name: str) -> str:
    cid = f"id-{name}"
    engine.containers[cid] = ContainerInfo(
        id=cid,
        name=name,
        image="img",
        labels={NAME_LABEL: name},
        status="running",
        health="healthy",
        started_at="2025-01-01T00:00:00Z",
    )
    engine.visible_from[cid] = 0.0
    return cid


class World:
    """Two container deployments (web, api), each with its labelled volume, and a stray volume."""

    def __init__(self) -> None:
        self.engine = MemoryEngine()
        self.records = MemoryRecordStore()
        self.keys = MemorySecretStore()
        self.natives = FakeNatives()
        self.purged: list[str] = []
        for name in ("web", "api"):
            self.records.save(_record(name, self.keys))
            _container(self.engine, name)
            self.engine.volumes[f"{name}-data"] = name
        self.engine.volumes["old-data"] = "old"  # its deployment is already gone

    def seams(self) -> DownSeams:
        def purge(remaining: list[DeploymentRecord], record: DeploymentRecord) -> PurgeResult:
            self.purged.append(record.name)
            return PurgeResult([f"/hub/{record.name}.gguf"], [])

        return DownSeams(self.engine, self.records, self.keys, self.natives, purge)


def test_down_removes_exactly_what_is_labelled_for_the_name() -> None:
    w = World()
    steps: list[str] = []
    result = down(
        w.seams(), "web", all_=False, purge=False, on_step=lambda s: steps.append(s.line())
    )
    assert (
        [s.line() for s in result.steps]
        == steps
        == [
            "web: stopped and removed container",
            "web: removed volume web-data",
            "web: removed API key file",
            "web: state removed",
        ]
    )
    assert list(w.engine.containers) == ["id-api"]
    assert w.engine.volumes == {"api-data": "api", "old-data": "old"}  # strays need --all
    assert sorted(w.records.records) == ["api"]
    assert list(w.keys.keys) == [w.keys.api_key_path("api")]
    assert not result.nothing_to_do and not result.invalid


def test_a_volume_the_record_lists_without_its_label_is_left_alone() -> None:
    w = World()
    w.engine.volumes["web-data"] = "someone-else"
    result = down(w.seams(), "web", all_=False, purge=False)
    assert "web: volume web-data is not labelled for 'web'; left alone" in [
        s.line() for s in result.steps
    ]
    assert "web-data" in w.engine.volumes


def test_a_key_path_deploy_did_not_generate_is_left_alone() -> None:
    w = World()
    w.records.save(_record("web", w.keys, api_key_path="/home/me/my.key"))
    result = down(w.seams(), "web", all_=False, purge=False)
    assert "web: API key file /home/me/my.key is not one deploy generated; left alone" in [
        s.line() for s in result.steps
    ]


def test_down_all_removes_every_deployment_and_stray_volumes() -> None:
    w = World()
    result = down(w.seams(), None, all_=True, purge=True)
    assert w.engine.containers == {} and w.engine.volumes == {} and w.records.records == {}
    assert w.purged == ["api", "web"]
    lines = [s.line() for s in result.steps]
    assert "web: deleted /hub/web.gguf" in lines
    assert lines[-1] == "old: removed volume old-data (its deployment was already gone)"


def test_invalid_records_are_left_alone() -> None:
    w = World()
    bad = StateFileInvalid("/state/deployments/broken.json", "not JSON")
    w.records.invalid.append(bad)
    _container(w.engine, "broken")
    with pytest.raises(StateFileInvalid):
        down(w.seams(), "broken", all_=False, purge=False)
    assert "id-broken" in w.engine.containers
    result = down(w.seams(), None, all_=True, purge=False)
    assert result.invalid == [bad]
    assert list(w.engine.containers) == ["id-broken"]  # an invalid record decides nothing


def test_unknown_name_is_nothing_to_do_and_native_servers_are_stopped() -> None:
    w = World()
    assert down(w.seams(), "nope", all_=False, purge=False).nothing_to_do
    w.records.save(_record("local", w.keys, runtime="native", pid=42, log_path="/l/local.log"))
    result = down(w.seams(), "local", all_=False, purge=False)
    assert w.natives.stopped == ["local"]
    assert [s.line() for s in result.steps][:2] == [
        "local: stopped",
        "local: log kept at /l/local.log",
    ]


def test_a_name_and_all_together_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        down(World().seams(), "web", all_=True, purge=False)
