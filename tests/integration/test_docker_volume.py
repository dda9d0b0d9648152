"""The Ollama store volume on the real Docker engine: labelled, handed to user 65534 by a
one-shot init container (CHOWN only, no network), removed again when that init fails.

The Ollama image cannot be pulled here, so a local image of busybox applets plays its part: the
init command is the same `chown` the rendered bundle asks for.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deployer.core.errors import VolumeInitFailed
from deployer.core.serve.render import NOBODY, volume_init_command
from deployer.core.serve.specs import VolumeSpec
from tests.integration.dockerkit import TEST_LABEL

if TYPE_CHECKING:
    from deployer.adapters.docker_engine import DockerEngine

pytestmark = pytest.mark.docker
TAG = "deployer-test/volume-init:1"


@pytest.fixture(scope="module")
def applets(engine: DockerEngine) -> Iterator[str]:
    """A FROM-scratch image whose chown, touch and ls are busybox."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed on this machine")
    ctx = Path(__import__("tempfile").mkdtemp(prefix="volinit-"))
    (ctx / "bin").mkdir()
    for name in ("chown", "touch", "ls"):
        shutil.copy(busybox, ctx / "bin" / name)
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY bin/ /bin/\nCMD ["serve"]\n')
    engine.build_image(context_dir=ctx, tag=TAG)
    shutil.rmtree(ctx, ignore_errors=True)
    yield TAG
    engine.client().images.remove(TAG, force=True)


def _spec(name: str, image: str, command: list[str]) -> VolumeSpec:
    return VolumeSpec(name=name, labels={"io.deployer.name": name, TEST_LABEL: "1"},
                      target="/ollama", init_image=image, init_command=command)  # fmt: skip


def _write_as_nobody(engine: DockerEngine, image: str, volume: str) -> None:
    from docker.types import Mount

    engine.client().containers.run(
        image, entrypoint=["touch", "/ollama/written"], user=NOBODY, read_only=True,
        cap_drop=["ALL"], network_mode="none", remove=True,
        mounts=[Mount(target="/ollama", source=volume, type="volume")],
    )  # fmt: skip


def test_volume_is_labelled_and_writable_by_the_server_user(
    engine: DockerEngine,
    applets: str,
) -> None:
    import docker.errors

    name = f"deployer-test-{secrets.token_hex(4)}-ollama"
    bare = f"{name}-bare"
    try:
        assert engine.create_volume(
            spec=_spec(name, applets, volume_init_command(NOBODY, "/ollama"))
        )
        assert engine.client().volumes.get(name).attrs["Labels"][TEST_LABEL] == "1"
        _write_as_nobody(engine, applets, name)
        # Reused as it is the second time; the init does not run again.
        assert (
            engine.create_volume(spec=_spec(name, applets, ["chown", "0:0", "/nowhere"])) is False
        )
        # Without the init a fresh volume is root's, and user 65534 cannot write it.
        assert engine.create_volume(spec=_spec(bare, applets, []))
        with pytest.raises(docker.errors.ContainerError):
            _write_as_nobody(engine, applets, bare)
        # The init container is gone (removed on exit) and never carried the deployer label.
        left = engine.client().containers.list(all=True, filters={"ancestor": applets})
        assert left == []
    finally:
        assert engine.remove_volume(name=name)
        engine.remove_volume(name=bare)


def test_failed_init_removes_the_volume(engine: DockerEngine, applets: str) -> None:
    name = f"deployer-test-{secrets.token_hex(4)}-ollama"
    with pytest.raises(VolumeInitFailed) as err:
        engine.create_volume(spec=_spec(name, applets, ["chown", NOBODY, "/not-there"]))
    assert "not-there" in err.value.message()
    assert engine.remove_volume(name=name) is False


def _down(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from deployer.cli.app import app

    result = CliRunner().invoke(app, ["down", *args])
    return result.exit_code, result.output


def test_down_removes_a_store_whose_deployment_record_was_lost(
    engine: DockerEngine,
    applets: str,
) -> None:
    """No record, no container: the volume is still found by its io.deployer.name label."""
    name = f"vt-lost-{secrets.token_hex(3)}"
    volume = f"deployer-{name}-ollama"
    other = f"deployer-vt-other-{secrets.token_hex(3)}-ollama"
    spec = _spec(volume, applets, [])
    engine.create_volume(spec=replace(spec, labels={**spec.labels, "io.deployer.name": name}))
    engine.create_volume(spec=_spec(other, applets, []))
    try:
        code, out = _down(name)
        assert code == 0, out
        assert f"removed volume {volume}" in out
        assert volume not in engine.list_deployer_volumes()
        assert other in engine.list_deployer_volumes()  # another deployment's store stays
        code, out = _down(name)
        assert code == 0 and "already gone" in out
    finally:
        engine.remove_volume(name=volume)
        engine.remove_volume(name=other)


def test_a_volume_still_mounted_is_a_clear_error(
    engine: DockerEngine,
    applets: str,
) -> None:
    from docker.types import Mount

    from deployer.core.errors import VolumeInUse

    volume = f"deployer-test-{secrets.token_hex(4)}-ollama"
    engine.create_volume(spec=_spec(volume, applets, []))
    holder = engine.client().containers.create(
        applets, mounts=[Mount(target="/ollama", source=volume, type="volume")]
    )
    try:
        with pytest.raises(VolumeInUse) as err:
            engine.remove_volume(name=volume)
        assert volume in err.value.message() and "docker ps -a" in err.value.message()
    finally:
        holder.remove(force=True)
        engine.remove_volume(name=volume)
