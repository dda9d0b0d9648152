"""Which runtime image deploy runs, per DEPLOYER_IMAGE_SOURCE, on the real engine (no registry
is reachable here: the official image can never be pulled)."""

from __future__ import annotations

import pytest

from deployer.adapters.docker_engine import DockerEngine
from deployer.cli.wiring import choose_image
from deployer.core.errors import ImageMissing, InvalidRequest

pytestmark = pytest.mark.docker
OFFICIAL = "ghcr.io/ggml-org/llama.cpp:server-b11434"


class _CountingPulls(DockerEngine):
    """The real engine, counting how often a registry is tried."""

    def __init__(self) -> None:
        super().__init__()
        self.pulls: list[str] = []

    def try_pull(self, *, tag: str) -> bool:
        self.pulls.append(tag)
        return super().try_pull(tag=tag)


def test_local_never_contacts_a_registry(
    runtime_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYER_IMAGE_SOURCE", "local")
    eng = _CountingPulls()
    image, why = choose_image(eng, OFFICIAL, "cpu", None)
    assert image == runtime_image and "no registry contacted" in why
    assert eng.pulls == []


def test_auto_tries_the_registry_then_uses_the_local_build(
    runtime_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYER_IMAGE_SOURCE", raising=False)
    eng = _CountingPulls()
    image, why = choose_image(eng, OFFICIAL, "cpu", None)
    assert image == runtime_image and "could not be pulled" in why
    assert eng.pulls == [OFFICIAL]


def test_official_never_falls_back_to_a_local_build(
    runtime_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYER_IMAGE_SOURCE", "official")
    eng = _CountingPulls()
    with pytest.raises(ImageMissing) as err:
        choose_image(eng, OFFICIAL, "cpu", None)
    assert OFFICIAL in err.value.message() and "docker save | docker load" in err.value.message()
    assert eng.pulls == [OFFICIAL]


def test_an_official_image_loaded_by_hand_is_used_without_a_pull(
    engine: DockerEngine, runtime_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Air-gapped: the official tag was `docker load`ed; local mode takes it as it is."""
    tag = "deployer-test/official-stand-in:1"
    engine.client().images.get(runtime_image).tag(tag)
    try:
        monkeypatch.setenv("DEPLOYER_IMAGE_SOURCE", "local")
        eng = _CountingPulls()
        assert choose_image(eng, tag, "cpu", None) == (tag, f"{tag} (official, present)")
        assert eng.pulls == []
    finally:
        engine.client().images.remove(tag)


def test_unknown_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYER_IMAGE_SOURCE", "registry")
    with pytest.raises(InvalidRequest) as err:
        choose_image(_CountingPulls(), OFFICIAL, "cpu", None)
    assert "auto, official or local" in err.value.message()
