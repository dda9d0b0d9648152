"""A model reference as the user wrote it, parsed once: catalog id, hf://, a .gguf path or demo.

Every command parses its MODEL argument here (parse_model_ref) and passes the typed reference
on; no other module asks "is this the demo, a file, the Hub or the catalog?". The split-file
name pattern (`NAME-00001-of-00003.gguf`) lives here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deployer.core.pull.hub_checks import REF_HINT, check_quant, check_repo_id, check_revision
from deployer.core.untrusted import UntrustedValue, shown

DEMO_REF = "demo"
HF_PREFIX = "hf://"

# hf:// body: the repo id up to the first ':' or '@', then ':QUANT' and '@REVISION' parts.
_REF_SPLIT_RE = re.compile(r"([^:@]*)(.*)", re.DOTALL)
_REF_SUFFIX_RE = re.compile(r"([:@])([^:@]*)", re.DOTALL)
# The parts of a split GGUF set: NAME-00001-of-00003.gguf.
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class CatalogRef:
    """A model id from the catalog (checked against it where it is looked up)."""

    text: str


@dataclass(frozen=True)
class HubRef:
    """A parsed hf://ORG/REPO[@REVISION][:QUANT] reference."""

    repo_id: str
    revision: str | None
    quant: str | None
    text: str = field(default="", compare=False)  # as written: the model's name in plans


@dataclass(frozen=True)
class LocalRef:
    """A .gguf file on this machine (the first part of a split set)."""

    text: str

    @property
    def path(self) -> Path:
        """The file as given, `~` expanded (not resolved: errors show what the user wrote)."""
        return Path(self.text).expanduser()


@dataclass(frozen=True)
class DemoRef:
    """The bundled demo model (Gemma 3 270M Q4_K_M)."""

    text: str = DEMO_REF


ModelRef = CatalogRef | HubRef | LocalRef | DemoRef


def parse_hf_ref(ref: str) -> HubRef:
    """Split hf://ORG/REPO[:QUANT][@REVISION] (either order) into checked parts.

    The one place a user's hf:// reference is read: the repo id by huggingface_hub's rules,
    the revision as a safe ref name (it becomes a path under refs/ and part of a URL), the
    quant as a label; anything else is one line (UntrustedValue), never a traceback.
    """
    source = f"model reference {shown(ref)}"
    body = ref.removeprefix(HF_PREFIX)
    repo_id, suffixes = _REF_SPLIT_RE.match(body).groups()  # type: ignore[union-attr]
    parts: dict[str, str] = {}
    for mark, value in _REF_SUFFIX_RE.findall(suffixes):
        what = "quant" if mark == ":" else "revision"
        if what in parts or not value:
            problem = (
                f"gives two {what}s" if what in parts else f"has an empty {what} after {mark!r}"
            )
            raise UntrustedValue("command line", "model reference", ref, problem, REF_HINT)
        parts[what] = value
    repo_id = check_repo_id(repo_id, source)
    quant = check_quant(parts["quant"], source) if "quant" in parts else None
    revision = check_revision(parts["revision"], source) if "revision" in parts else None
    return HubRef(repo_id, revision, quant, ref)


def parse_model_ref(text: str) -> ModelRef:
    """The reference `text` names: hf:// (checked), a .gguf path, `demo`, else a catalog id."""
    if text.startswith(HF_PREFIX):
        return parse_hf_ref(text)
    if text.lower().endswith(".gguf"):
        return LocalRef(text)
    if text == DEMO_REF:
        return DemoRef()
    return CatalogRef(text)


def as_model_ref(ref: ModelRef | str) -> ModelRef:
    """`ref` parsed if it is still text (library callers may pass either)."""
    return parse_model_ref(ref) if isinstance(ref, str) else ref


def model_alias(model: str) -> str:
    """The model name clients send (`--alias`): catalog id, ORG/REPO, or the file's stem."""
    body = model.removeprefix(HF_PREFIX)
    return PurePosixPath(body).stem if body.lower().endswith(".gguf") else body


def split_total(name: str) -> int | None:
    """How many parts the split set `name` belongs to has; None for a single file."""
    match = SPLIT_RE.search(name)
    return int(match.group(2)) if match else None


def split_set_name(name: str) -> str:
    """The name a split set goes by (its parts' common name), or `name` for a single file."""
    return SPLIT_RE.sub(".gguf", name)


def split_part_names(first: str, parts: int) -> list[str]:
    """All part names of a split set from its first part's name (or [first])."""
    match = SPLIT_RE.search(first)
    if parts <= 1 or not match:
        return [first]
    prefix, suffix = first[: match.start()], first[match.end() :]
    return [f"{prefix}-{i:05d}-of-{parts:05d}.gguf{suffix}" for i in range(1, parts + 1)]


def split_parts(path: Path) -> list[Path]:
    """The file, or every part of the split set its name says it belongs to."""
    total = split_total(path.name)
    if total is None:
        return [path]
    return [path.with_name(n) for n in split_part_names(path.name, total)]
