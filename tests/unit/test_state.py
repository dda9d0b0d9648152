"""Deployment records: atomic 0600 files, migrations, reconcile rules, purge: no engine."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployer.core import state
from deployer.core.containers import NAME_LABEL, ContainerInfo
from deployer.core.errors import InvalidRequest
from deployer.core.runtime_errors import StateFileInvalid
from deployer.core.state import (
    DeploymentRecord,
    delete_record,
    load_record,
    load_records,
    purge_weights,
    reconcile,
    record_from_dict,
    record_path,
    save_record,
    uptime_s,
)


def _rec(name: str = "web", **kw: object) -> DeploymentRecord:
    base: dict[str, object] = {
        "name": name,
        "model": "demo",
        "quant": "Q4_K_M",
        "backend": "llamacpp",
        "runtime": "container",
        "endpoint": "http://127.0.0.1:18080",
        "port": 18080,
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    base.update(kw)
    return DeploymentRecord(**base)  # type: ignore[arg-type]


def _ctr(name: str, status: str = "running", health: str | None = "healthy") -> ContainerInfo:
    return ContainerInfo(
        id=f"id-{name}",
        name=name,
        image="img",
        labels={NAME_LABEL: name},
        status=status,
        health=health,
        started_at="2025-01-01T00:00:00.123456789Z",
    )


def test_round_trip_is_0600_atomic_and_versioned() -> None:
    rec = _rec(api_key_path="/keys/web.key", files=["/m.gguf"], container_id="abc")
    path = save_record(rec)
    assert path == record_path("web")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == state.SCHEMA_VERSION
    assert raw["api_key_path"] == "/keys/web.key" and "api_key" not in raw
    assert load_record("web") == rec
    assert [p.name for p in path.parent.iterdir()] == ["web.json"]  # no temp file left
    assert load_records() == [rec]
    assert delete_record("web") and not delete_record("web")
    assert load_record("web") is None


def test_a_failed_write_keeps_the_old_record(monkeypatch: pytest.MonkeyPatch) -> None:
    save_record(_rec(port=1))

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            save_record(_rec(port=2))
    old = load_record("web")
    assert old is not None and old.port == 1
    assert len(list(record_path("web").parent.iterdir())) == 1


def test_migration_hook_upgrades_old_records(monkeypatch: pytest.MonkeyPatch) -> None:
    def v1_to_v2(raw: dict[str, object]) -> dict[str, object]:
        raw["endpoint"] = str(raw.pop("url"))
        return raw

    monkeypatch.setattr(state, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(state.MIGRATIONS, 1, v1_to_v2)
    old = _rec().as_dict()
    old["url"] = old.pop("endpoint")
    old["schema_version"] = 1
    rec = record_from_dict(old)
    assert rec.endpoint == "http://127.0.0.1:18080" and rec.schema_version == 2


def test_newer_corrupt_or_unknown_records_are_refused(tmp_path: Path) -> None:
    newer = _rec().as_dict() | {"schema_version": 99}
    with pytest.raises(StateFileInvalid, match="newer"):
        record_from_dict(newer)
    with pytest.raises(StateFileInvalid, match="unknown keys"):
        record_from_dict(_rec().as_dict() | {"api_key": "secret"})
    path = record_path("bad")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(StateFileInvalid, match="not JSON") as err:
        load_record("bad")
    assert str(path) in err.value.message()


@pytest.mark.parametrize("name", ["../etc", "", "a/b", "-x", "x" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        record_path(name)


def test_reconcile_rules() -> None:
    records = [
        _rec("ok"),
        _rec("sick"),
        _rec("loading"),
        _rec("plain"),
        _rec("dead"),
        _rec("crashloop"),
        _rec("removed"),
        _rec("nat-up", runtime="native", pid=11),
        _rec("nat-down", runtime="native", pid=12),
    ]
    containers = [
        _ctr("ok"),
        _ctr("sick", health="unhealthy"),
        _ctr("loading", health="starting"),
        _ctr("plain", health=None),
        _ctr("dead", status="exited"),
        _ctr("crashloop", status="restarting"),
        _ctr("stray"),
    ]
    got = {s.name: s.status for s in reconcile(records, containers, pid_alive=lambda p: p == 11)}
    assert got == {
        "ok": "healthy",
        "sick": "unhealthy",
        "loading": "starting",
        "plain": "running",
        "dead": "exited",
        "crashloop": "unhealthy",
        "removed": "gone",
        "stray": "orphan",
        "nat-up": "running",
        "nat-down": "gone",
    }
    unknown = reconcile([_rec("ok")], None)
    assert [(s.name, s.status) for s in unknown] == [("ok", "unknown")]


def test_uptime_reads_docker_nanoseconds() -> None:
    now = datetime(2025, 1, 1, 0, 1, 0, tzinfo=UTC)
    assert uptime_s("2025-01-01T00:00:00.123456789Z", now) == pytest.approx(59.876544)
    assert uptime_s("2025-01-01T00:00:00+00:00", now) == 60.0
    assert uptime_s(None) is None and uptime_s("garbage") is None


def _hub_file(hub: Path, repo: str, name: str) -> Path:
    blob = hub / f"models--{repo}" / "blobs" / f"{repo}-{name}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"w")
    link = hub / f"models--{repo}" / "snapshots" / "rev" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def test_purge_deletes_only_unshared_files_in_the_hub_cache(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    own, shared = _hub_file(hub, "a", "a.gguf"), _hub_file(hub, "s", "s.gguf")
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"m")
    gone = hub / "models--g" / "snapshots" / "rev" / "g.gguf"
    gone.parent.mkdir(parents=True)
    target = _rec("a", files=[str(own), str(shared), str(mine), str(gone)])
    other = _rec("b", files=[str(shared)])
    blob = own.resolve()
    result = purge_weights([target, other], target, hub_cache=hub)
    assert result.deleted == [str(own)]
    assert not os.path.lexists(own) and not blob.exists()
    assert dict(result.kept) == {
        str(shared): "used by another deployment",
        str(mine): "not in the Hugging Face cache",
        str(gone): "already gone",
    }
    assert shared.exists() and mine.exists()
