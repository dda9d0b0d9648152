"""Which container image a deploy runs, and why: --image, the official one, or a local build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from deployer.core.errors import ImageMissing, InvalidRequest

IMAGE_SOURCES = ("auto", "official", "local")


class ImageStore(Protocol):
    """What the choice asks the container engine (deployer.adapters.docker_engine)."""

    def image_info(self, *, tag: str) -> object | None:
        """The image `tag`, if this engine holds it."""
        ...

    def try_pull(self, *, tag: str) -> bool:
        """Pull `tag`; False when no registry could provide it."""
        ...


def choose_image(
    engine: ImageStore,
    official: str,
    kind: str,
    given: str | None,
    backend: str,
    *,
    source: str,
    build: Callable[[], tuple[str, bool]],
) -> tuple[str, str]:
    """The image to run and why: --image; else as `source` (DEPLOYER_IMAGE_SOURCE) says:

    - auto (default): the official image when present or pullable, else (CPU, llama.cpp) the
      local build (`build` returns its tag and whether it was built just now);
    - official: the official image only, never a local build;
    - local: no registry is contacted (air-gapped sites): the official image if it was loaded
      by hand, else the local build.
    """
    if given:
        return given, f"{given} (--image)"
    source = source.strip().lower() or "auto"
    if source not in IMAGE_SOURCES:
        raise InvalidRequest(
            f"DEPLOYER_IMAGE_SOURCE is '{source}'",
            "Set it to auto, official or local (or unset it).",
        )
    if engine.image_info(tag=official) is not None:
        return official, f"{official} (official, present)"
    if source != "local" and engine.try_pull(tag=official):
        return official, f"{official} (official, pulled)"
    if source == "official" or backend == "ollama" or kind != "cpu":
        # No local build of Ollama or of a GPU image: it must be pulled or loaded.
        raise ImageMissing(official, backend)
    tag, built = build()
    how = "built locally just now" if built else "local build"
    why = (
        "DEPLOYER_IMAGE_SOURCE=local, no registry contacted"
        if source == "local"
        else f"{official} could not be pulled, no registry reachable"
    )
    return tag, f"{tag} ({how}: {why})"
