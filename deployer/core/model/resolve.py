"""Turn any model reference into ModelFacts: catalog id, local .gguf, hf://ORG/REPO:QUANT, demo.

The Hub is reached only through a HubReader passed in (deployer/adapters/hub.py is the real
one), this machine's files and the demo package through LocalModels
(deployer/adapters/local_models.py); core never imports the Hub SDK or reads a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from deployer.core.errors import (
    ExternalUnavailable,
    GGUFReadError,
    InvalidRequest,
    ModelNotFound,
    QuantNotFound,
)
from deployer.core.model.catalog import get_model
from deployer.core.model.facts import ModelFacts
from deployer.core.model.ref import (
    DEMO_REF,
    HF_PREFIX,
    CatalogRef,
    DemoRef,
    HubRef,
    LocalRef,
    ModelRef,
    as_model_ref,
    split_parts,
    split_set_name,
    split_total,
)
from deployer.core.model.weights import facts_from_catalog
from deployer.core.pull.hub_checks import check_quant

DEMO_QUANT = "Q4_K_M"
DEFAULT_QUANT = "Q4_K_M"
_QUANT_RE = re.compile(
    r"^(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4(?:_MOE)?|NVFP4|BF16|F16|F32)$", re.IGNORECASE
)


@dataclass(frozen=True)
class RemoteFile:
    """A .gguf file in a Hub repo: its path in the repo, exact size and LFS sha256."""

    name: str
    size: int
    sha256: str | None = None


class HubReader(Protocol):
    """What resolve needs from the Hub: a file listing and header-only reads."""

    def list_gguf_files(self, repo_id: str, revision: str | None = None) -> list[RemoteFile]:
        """All .gguf files of a repo."""
        ...

    def read_header_facts(
        self,
        repo_id: str,
        files: list[RemoteFile],
        revision: str | None = None,
        *,
        name: str,
        source: str,
    ) -> ModelFacts:
        """ModelFacts from the headers of one file or all parts of a split set."""
        ...


class LocalModels(Protocol):
    """This machine's model files as resolve reads them (deployer.adapters.local_models)."""

    def kind(self, path: Path) -> Literal["file", "other", "missing"]:
        """What is at `path`: a regular file (links followed), something else, or nothing."""
        ...

    def resolved(self, path: Path) -> Path:
        """`path` made absolute, links resolved."""
        ...

    def gguf_facts(self, parts: list[Path], name: str | None, source: str) -> ModelFacts:
        """ModelFacts from the headers of local GGUF parts (deployer's memo may answer)."""
        ...

    def demo_path(self) -> Path:
        """The demo model's file, assembled and sha256-checked by its package."""
        ...


def quant_label(filename: str) -> str:
    """The quant label in a GGUF file name (`...-UD-Q4_K_XL-00001-of-00002.gguf` -> UD-Q4_K_XL)."""
    stem = split_set_name(filename)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    tokens = re.split(r"[-./]", stem)
    for i in range(len(tokens) - 1, -1, -1):
        if _QUANT_RE.match(tokens[i]):
            label = tokens[i].upper()
            return f"UD-{label}" if i > 0 and tokens[i - 1].upper() == "UD" else label
    return PurePosixPath(stem).name


def _group_files(files: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    """Model files keyed by name, each split set as one entry with its parts in order."""
    groups: dict[str, list[RemoteFile]] = {}
    for f in files:
        if not f.name.lower().endswith(".gguf") or "mmproj" in f.name.lower():
            continue  # vision projectors are companions, not models
        groups.setdefault(split_set_name(f.name), []).append(f)
    for key, parts in groups.items():
        parts.sort(key=lambda f: f.name)
        total = split_total(parts[0].name)
        if total is not None and total != len(parts):
            raise GGUFReadError(key, f"split set has {len(parts)} of {total:05d} parts")
    return groups


def select_files(files: list[RemoteFile], quant: str | None, model: str) -> list[RemoteFile]:
    """The file (or split-set parts) for `quant`; QuantNotFound lists the labels there are."""
    groups = _group_files(files)
    if not groups:
        err = ModelNotFound(model, [])
        err.hint = "The repo has no .gguf files."
        raise err
    labels = {key: quant_label(key) for key in groups}
    wanted = quant or DEFAULT_QUANT
    found = [k for k, label in labels.items() if label.lower() == wanted.lower()]
    if not found and quant:
        found = [k for k in groups if quant.lower() in PurePosixPath(k).name.lower()]
    if not found and quant is None and len(groups) == 1:
        found = list(groups)
    if len(found) > 1:
        single = [k for k in found if len(groups[k]) == 1]
        found = single if len(single) == 1 else found
    if len(found) != 1:
        raise QuantNotFound(quant or "(none given)", sorted(set(labels.values())), model)
    return groups[found[0]]


def _local_parts(path: Path, local: LocalModels) -> list[Path]:
    parts = split_parts(path)
    missing = [p for p in parts if local.kind(p) != "file"]
    if missing:
        raise GGUFReadError(str(path), f"split set part missing: {missing[0]}")
    return parts


def _resolve_local(ref: LocalRef, local: LocalModels) -> ModelFacts:
    path = ref.path
    kind = local.kind(path)
    if kind != "file":
        err = ModelNotFound(ref.text, [])
        what = "Not a regular file" if kind == "other" else "No such file"
        err.hint = f"{what}: {local.resolved(path)}"
        raise err
    parts = _local_parts(local.resolved(path), local)
    return local.gguf_facts(parts, None, str(parts[0]))


def need_local(local: LocalModels | None) -> LocalModels:
    """`local`, or the error a caller that passed none gets when a local file is asked for."""
    if local is None:
        raise InvalidRequest("reading a local model file needs LocalModels (none was given)")
    return local


def _resolve_hub(parsed: HubRef, quant: str | None, hub: HubReader | None) -> ModelFacts:
    if hub is None:
        raise ExternalUnavailable("Hugging Face Hub", "no Hub reader was configured")
    wanted = parsed.quant or (check_quant(quant, "--quant") if quant else None)
    model = f"{HF_PREFIX}{parsed.repo_id}"
    files = select_files(hub.list_gguf_files(parsed.repo_id, parsed.revision), wanted, model)
    label = quant_label(files[0].name)
    return hub.read_header_facts(
        parsed.repo_id, files, parsed.revision, name=parsed.repo_id, source=f"{model}:{label}"
    )


def resolve_model(
    ref: ModelRef | str,
    quant: str | None,
    *,
    hub: HubReader | None = None,
    local: LocalModels | None = None,
) -> ModelFacts:
    """ModelFacts for a catalog id, a .gguf path, hf://ORG/REPO[:QUANT] or `demo`."""
    ref = as_model_ref(ref)
    if isinstance(ref, HubRef):
        return _resolve_hub(ref, quant, hub)
    if isinstance(ref, LocalRef):
        facts = _resolve_local(ref, need_local(local))
        if quant and quant.upper() != facts.quant.upper():
            # a file holds one quantization: planning another would silently plan this one
            err = QuantNotFound(quant, [facts.quant], ref.text)
            err.hint = f"{ref.text} holds {facts.quant} only; drop --quant or pass that file."
            raise err
        return facts
    if isinstance(ref, DemoRef):
        if quant and quant.upper() != DEMO_QUANT:
            raise QuantNotFound(quant, [DEMO_QUANT], DEMO_REF)
        files = need_local(local)
        return files.gguf_facts([files.demo_path()], DEMO_REF, DEMO_REF)
    assert isinstance(ref, CatalogRef)
    model = get_model(ref.text)
    return facts_from_catalog(model, quant or model.default_quant)
