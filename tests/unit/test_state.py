"""Deployment records: atomic 0600 files, migrations, reconcile rules, purge: no engine."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployer.adapters import state_store as store
from deployer.adapters.state_store import (
    delete_record,
    load_record,
    load_records,
    record_path,
    save_record,
)
from deployer.adapters.weights_purge import purge_weights
from deployer.core.errors import InvalidRequest, StateFileInvalid
from deployer.core.serve.containers import NAME_LABEL, ContainerInfo
from deployer.core.state import records as state
from deployer.core.state.records import (
    DeploymentRecord,
    reconcile,
    record_from_dict,
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
    if "port" in kw and "endpoint" not in kw:
        base["endpoint"] = f"http://127.0.0.1:{kw['port']}"
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
    rec = _rec(api_key_path="/keys/web.key", files=["/m.gguf"], container_id="abc123def456")
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
    assert uptime_s(None, now) is None and uptime_s("garbage", now) is None


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


# -- hostile state files: every way a file can be wrong is one StateFileInvalid ----------------


def _write_raw(name: str, data: bytes) -> Path:
    path = record_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _valid(**changes: object) -> bytes:
    raw = _rec().as_dict() | changes
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\xff\xfe binary", "not UTF-8"),
        (b"[" * 100_000, "larger than"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"port": NaN}', "NaN"),
        (b'{"port": ' + b"9" * 5000 + b"}", "not JSON deployer wrote"),
        (_valid(pid=-1, runtime="native"), "pid is -1"),
        (_valid(pid=1, runtime="native"), "pid is 1"),
        (_valid(pid="1", runtime="native"), "pid is '1', not a whole number"),
        (_valid(pid=True, runtime="native"), "not a whole number"),
        (_valid(port=0, endpoint="http://127.0.0.1:0"), "out of range"),
        (_valid(port=70000, endpoint="http://127.0.0.1:70000"), "out of range"),
        (_valid(port="18080"), "not a whole number"),
        (_valid(endpoint="http://evil.example:18080"), "endpoint"),
        (_valid(endpoint="http://127.0.0.1:1"), "is not on port 18080"),
        (_valid(files="/m.gguf"), "files is '/m.gguf', not a list"),
        (_valid(files=["/m.gguf\n/etc/passwd"]), "control character"),
        (_valid(volumes=["../x"]), "not a volume name"),
        (_valid(container_id="--all"), "not a container id"),
        (_valid(runtime="shell"), "not one of container, native"),
        (_valid(name="other"), "not its file's name"),
        (_valid(schema_version=0), "unknown schema version"),
        (_valid(schema_version="1"), "unknown schema version"),
        (_valid(schema_version=99), "newer"),
        (_valid(api_key="secret"), "unknown keys"),
        (b'{"name": "web"}', "missing"),
    ],
)
def test_a_bad_record_is_one_error_naming_the_file(data: bytes, problem: str) -> None:
    path = _write_raw("web", data)
    with pytest.raises(StateFileInvalid) as err:
        load_record("web")
    assert problem in err.value.problem
    msg = err.value.message()
    assert str(path) in msg and "rm -- " in msg and "\n" not in msg
    scan = store.scan_records()
    assert scan.records == [] and [e.path for e in scan.invalid] == [str(path)]


def test_folders_links_and_fifos_are_never_read(tmp_path: Path) -> None:
    folder = record_path("dir")
    folder.mkdir(parents=True)
    record_path("zero").symlink_to("/dev/zero")  # reading it would never end
    good = save_record(_rec("good"))
    record_path("link").symlink_to(good)  # even a link to a valid record
    os.mkfifo(record_path("fifo"))  # opening it for reading would block
    problems = {Path(e.path).name: e.problem for e in store.scan_records().invalid}
    assert problems == {
        "dir.json": "is not a regular file",
        "zero.json": "is a symbolic link, not a file deployer wrote",
        "link.json": "is a symbolic link, not a file deployer wrote",
        "fifo.json": "is not a regular file",
    }
    assert [r.name for r in load_records()] == ["good"]


def test_an_invalid_record_is_listed_as_invalid_with_its_container() -> None:
    bad = StateFileInvalid("/s/deployments/broken.json", "not JSON")
    got = reconcile([_rec("ok")], [_ctr("ok"), _ctr("broken")], invalid=[bad])
    assert [(s.name, s.status, s.invalid) for s in got] == [
        ("broken", "invalid", bad),
        ("ok", "healthy", None),
    ]
    (broken,) = [s for s in got if s.name == "broken"]
    assert broken.container is not None  # not also listed as an orphan


def test_save_remembers_the_port_after_the_record_is_gone() -> None:
    save_record(_rec("web", port=18555))
    assert delete_record("web")
    assert store.remembered_ports() == {"web": 18555}
    save_record(_rec("api", port=18556))
    save_record(_rec("web", port=18557))
    assert store.remembered_ports() == {"api": 18556, "web": 18557}
    assert stat.S_IMODE(store.ports_path().stat().st_mode) == 0o600


def test_the_ports_memory_is_bounded_and_a_bad_one_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "MAX_REMEMBERED_PORTS", 3)
    for i in range(5):
        store.remember_port(f"n{i}", 20000 + i)
    assert store.remembered_ports() == {"n2": 20002, "n3": 20003, "n4": 20004}
    store.ports_path().write_text('{"a": 0, "b": "1", "../c": 5, "d": 70000, "e": true, "f": 9}')
    assert store.remembered_ports() == {"f": 9}
    store.ports_path().unlink()
    store.ports_path().symlink_to("/dev/zero")
    assert store.remembered_ports() == {}
