"""LoRA adapters: the `--lora ADAPTER[:SCALE]` text parsed once, an adapter GGUF's header read
into facts, and the check that an adapter fits its base model.

What is checked follows the pinned llama.cpp (build 11434, src/llama-adapter.cpp
llama_adapter_lora_init_impl): general.type must be "adapter", adapter.type "lora",
general.architecture the base's; every tensor ends in `.lora_a` or `.lora_b` (norm vectors
ending `_norm.weight` are skipped there, so they are not counted here); A and B come in pairs,
A's rows are B's columns (the rank), A's input width and B's output width are the base
tensor's. llama.cpp allocates each pair in a buffer of the device that holds the base tensor
(the CPU when the base tensor is repacked), so an adapter costs its tensor bytes on the same
device as the layer it changes: `with_adapters` adds them to the base's per-layer bytes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from deployer.core.errors import AdapterMismatch, GGUFReadError
from deployer.core.model.facts import LLAMA_MAX_LAYERS, ModelFacts
from deployer.core.model.gguf_header import FLOAT32, FLOAT64, INT_TYPES, STRING, GGUFHeader
from deployer.core.model.ref import HF_PREFIX, LocalRef
from deployer.core.pull.hub_checks import check_repo_id, check_revision, repo_path_problem
from deployer.core.untrusted import UntrustedValue, check_line

LORA_HINT = "Pass --lora FILE.gguf[:SCALE] or --lora hf://ORG/REPO[/FILE.gguf][:SCALE]."
# llama.cpp parses a scale with std::stof; deployer keeps it to a range that means something
# (0 switches the adapter off; negative scales subtract it, as llama.cpp allows).
MAX_SCALE = 100.0
MAX_ADAPTERS = 16
# ggml's CPU buffer aligns each tensor to TENSOR_ALIGNMENT (ggml-cpu.c): 32 bytes.
TENSOR_ALIGNMENT = 32
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_SCALE_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# Base tensors whose input is the embedding (A's width must be n_embd), and those whose output
# is (B's height must be n_embd), by their name inside a block.
_INPUT_IS_EMBD = frozenset(
    {"attn_q", "attn_k", "attn_v", "attn_qkv", "ffn_gate", "ffn_up", "ffn_gate_inp"}
)
_OUTPUT_IS_EMBD = frozenset({"attn_output", "ffn_down"})


@dataclass(frozen=True)
class HubAdapterRef:
    """hf://ORG/REPO[/FILE.gguf][@REVISION]: an adapter on the Hub."""

    repo_id: str
    filename: str | None
    revision: str | None
    text: str


AdapterRef = LocalRef | HubAdapterRef


@dataclass(frozen=True)
class LoraRequest:
    """One --lora as the user wrote it: where the adapter is and the scale to load it at."""

    ref: AdapterRef
    scale: float
    text: str


def _parse_scale(text: str) -> float:
    if not _SCALE_RE.fullmatch(text):
        raise UntrustedValue("--lora", "scale", text, "is not a number", LORA_HINT)
    scale = float(text)
    if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
        raise UntrustedValue(
            "--lora", "scale", text, f"is outside -{MAX_SCALE:g}..{MAX_SCALE:g}", LORA_HINT
        )
    return scale


def _parse_hub(body: str, text: str) -> HubAdapterRef:
    revision = None
    if "@" in body:
        body, revision = body.split("@", 1)
        revision = check_revision(revision, f"--lora {text}")
    parts = body.split("/")
    repo_id = check_repo_id("/".join(parts[:2]), f"--lora {text}")
    filename = "/".join(parts[2:]) or None
    if filename is not None:
        problem = repo_path_problem(filename)
        if problem or not filename.lower().endswith(".gguf"):
            raise UntrustedValue(
                "--lora", "file", filename, problem or "is not a .gguf file", LORA_HINT
            )
    return HubAdapterRef(repo_id, filename, revision, text)


def parse_lora(text: str) -> LoraRequest:
    """`ADAPTER[:SCALE]` checked: a local .gguf or hf://ORG/REPO[/FILE.gguf], scale 1 by default."""
    check_line(text, "--lora", "adapter", max_len=4096)
    where, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    # A trailing ":SCALE" (never part of a path here: a scale has no '/' and is no .gguf name).
    if sep and head not in ("", "hf") and "/" not in tail and not tail.lower().endswith(".gguf"):
        where, scale = head, _parse_scale(tail)
    if where.startswith(HF_PREFIX):
        return LoraRequest(_parse_hub(where.removeprefix(HF_PREFIX), where), scale, text)
    if not where.lower().endswith(".gguf"):
        raise UntrustedValue("--lora", "adapter", where, "is not a .gguf file", LORA_HINT)
    return LoraRequest(LocalRef(where), scale, text)


@dataclass(frozen=True)
class AdapterFacts:
    """What an adapter GGUF's header says, checked."""

    architecture: str
    alpha: float
    rank: int
    tensor_bytes: int  # what llama.cpp allocates: every lora_a/lora_b, aligned
    layer_bytes: tuple[int, ...]  # per block index (up to the highest block it touches)
    other_bytes: int  # pairs outside blocks (token_embd, output): held on the host
    n_embd: int | None  # the embedding width its tensors imply (None: none tells)
    n_layer: int | None  # <arch>.block_count when the header carries it
    pairs: int


def _string(header: GGUFHeader, key: str) -> str | None:
    field = header.kv.get(key)
    if field is None or field.type != STRING or not isinstance(field.value, str):
        return None
    return field.value


def _aligned(n: int) -> int:
    return -(-n // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT


def _alpha(header: GGUFHeader, label: str) -> float:
    field = header.kv.get("adapter.lora.alpha")
    if field is None:
        return 0.0  # llama.cpp reads a missing alpha as 0: the scale is used as given
    if field.type not in (FLOAT32, FLOAT64) or not isinstance(field.value, float):
        raise GGUFReadError(label, f"adapter.lora.alpha is {field.type_name}, not a float")
    if not math.isfinite(field.value) or field.value < 0:
        raise GGUFReadError(label, f"adapter.lora.alpha is {field.value}, not a finite alpha >= 0")
    return field.value


def _block_count(header: GGUFHeader, arch: str, label: str) -> int | None:
    field = header.kv.get(f"{arch}.block_count")
    if field is None:
        return None
    if field.type not in INT_TYPES or not isinstance(field.value, int):
        raise GGUFReadError(label, f"{arch}.block_count is {field.type_name}, not a count")
    if not 0 < field.value <= LLAMA_MAX_LAYERS:
        raise GGUFReadError(
            label, f"{arch}.block_count is {field.value}, not 1..{LLAMA_MAX_LAYERS}"
        )
    return field.value


def adapter_facts(header: GGUFHeader, label: str) -> AdapterFacts:
    """The facts of a LoRA adapter's header; GGUFReadError when llama.cpp would refuse it."""
    kind = _string(header, "general.type")
    if kind != "adapter":
        raise GGUFReadError(
            label, f"general.type is {kind!r}, not 'adapter': this is not an adapter file"
        )
    adapter_type = _string(header, "adapter.type")
    if adapter_type != "lora":
        raise GGUFReadError(label, f"adapter.type is {adapter_type!r}, not 'lora'")
    arch = _string(header, "general.architecture")
    if arch is None or not _ARCH_RE.fullmatch(arch):
        raise GGUFReadError(label, "general.architecture is missing or not an architecture name")
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    sizes: Counter[str] = Counter()
    for t in header.tensors:
        if t.name.endswith("_norm.weight"):
            continue  # llama.cpp skips norm vectors of an adapter
        base, dot, part = t.name.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise GGUFReadError(label, f"tensor {t.name!r} is not a lora_a or lora_b tensor")
        if len(t.shape) != 2:
            raise GGUFReadError(label, f"tensor {t.name!r} is not a matrix")
        pairs.setdefault(base, {})[part] = t.shape
        sizes[base] += _aligned(t.n_bytes)
    if not pairs:
        raise GGUFReadError(label, "the adapter has no lora_a/lora_b tensors")
    layer: Counter[int] = Counter()
    other = 0
    ranks: set[int] = set()
    widths: set[int] = set()
    for base, ab in pairs.items():
        if set(ab) != {"lora_a", "lora_b"}:
            raise GGUFReadError(label, f"tensor pair {base!r} is missing one of lora_a, lora_b")
        a, b = ab["lora_a"], ab["lora_b"]
        match = _BLOCK_RE.match(base)
        is_embd = base.endswith("token_embd.weight")
        if not is_embd and a[1] != b[0]:
            raise GGUFReadError(label, f"tensor pair {base!r}: lora_a rank {a[1]} != lora_b {b[0]}")
        ranks.add(b[0] if not is_embd else a[0])
        if match is None:
            other += sizes[base]
            continue
        index = int(match.group(1))
        if index >= LLAMA_MAX_LAYERS:
            raise GGUFReadError(label, f"tensor {base!r} names block {index} (at most 511)")
        layer[index] += sizes[base]
        kind_name = match.group(2).removesuffix(".weight")
        if kind_name in _INPUT_IS_EMBD:
            widths.add(a[0])
        elif kind_name in _OUTPUT_IS_EMBD:
            widths.add(b[1])
    if len(widths) > 1:
        raise GGUFReadError(label, f"its tensors disagree on the embedding width: {sorted(widths)}")
    top = max(layer, default=-1)
    return AdapterFacts(
        architecture=arch,
        alpha=_alpha(header, label),
        rank=max(ranks),
        tensor_bytes=sum(sizes.values()),
        layer_bytes=tuple(layer[i] for i in range(top + 1)),
        other_bytes=other,
        n_embd=widths.pop() if widths else None,
        n_layer=_block_count(header, arch, label),
        pairs=len(pairs),
    )


@dataclass(frozen=True)
class Adapter:
    """An adapter ready to plan and serve: its file on this machine, scale and facts."""

    ref: str  # as written (without the scale)
    path: Path  # the local file (for hf://, in the Hub cache after its verified pull)
    scale: float
    facts: AdapterFacts

    def as_dict(self) -> dict[str, Any]:
        """The `adapters` entries of `deployer plan --json`."""
        return {
            "ref": self.ref,
            "path": str(self.path),
            "scale": self.scale,
            "bytes": self.facts.tensor_bytes,
            "arch": self.facts.architecture,
            "alpha": self.facts.alpha,
            "rank": self.facts.rank,
        }

    @property
    def file_name(self) -> str:
        """The adapter's file name (how it is shown and mounted)."""
        return PurePosixPath(str(self.path)).name


def check_adapter(base: ModelFacts, adapter: Adapter) -> None:
    """Refuse, in one line naming both, an adapter made for another architecture or shape."""
    a, arch = adapter.facts, base.arch
    base_name = base.name
    if a.architecture != arch.architecture:
        raise AdapterMismatch(
            adapter.ref, base_name, "architecture", a.architecture, arch.architecture
        )
    # The blocks its tensors name count too: a header's block_count may understate them.
    layers = max(a.n_layer or 0, len(a.layer_bytes))
    if (a.n_layer is not None and a.n_layer != arch.n_layer) or layers > arch.n_layer:
        shown_layers = a.n_layer if a.n_layer not in (None, arch.n_layer) else layers
        raise AdapterMismatch(
            adapter.ref, base_name, "layer count", str(shown_layers), str(arch.n_layer)
        )
    if a.n_embd is not None and a.n_embd != arch.n_embd:
        raise AdapterMismatch(
            adapter.ref, base_name, "embedding width", str(a.n_embd), str(arch.n_embd)
        )


def with_adapters(facts: ModelFacts, adapters: list[Adapter]) -> ModelFacts:
    """`facts` with the adapters' bytes placed where llama.cpp puts them: each pair with its
    base layer (on that layer's device), pairs outside blocks on the host."""
    if not adapters:
        return facts
    n = facts.arch.n_layer
    per_layer = [0] * n
    other = 0
    for adapter in adapters:
        check_adapter(facts, adapter)
        for i, b in enumerate(adapter.facts.layer_bytes):
            per_layer[i] += b
        other += adapter.facts.other_bytes
    weights = facts.weights.model_copy(
        update={"adapter_block_bytes": per_layer, "adapter_host_bytes": other}
    )
    return facts.model_copy(update={"weights": weights})


def check_adapter_count(requests: list[LoraRequest]) -> None:
    """At most MAX_ADAPTERS adapters, each named once."""
    if len(requests) > MAX_ADAPTERS:
        raise UntrustedValue(
            "--lora", "adapters", str(len(requests)), f"are more than {MAX_ADAPTERS}", LORA_HINT
        )
    seen = Counter(r.ref.text for r in requests)
    twice = [t for t, n in seen.items() if n > 1]
    if twice:
        raise UntrustedValue("--lora", "adapter", twice[0], "is given twice", "Give it once.")


class AdapterSource(Protocol):
    """Adapter files as the plan reads them (deployer.adapters.adapter_files)."""

    def local_file(self, path: Path) -> Path:
        """`path` resolved, or NotFoundError naming it when no regular file is there."""
        ...

    def pull(self, ref: HubAdapterRef) -> Path:
        """The Hub adapter in the local cache, pulled and sha256-verified like a model."""
        ...

    def facts(self, path: Path, label: str) -> AdapterFacts:
        """The checked facts of the adapter GGUF at `path` (GGUFReadError naming `label`)."""
        ...


def load_adapters(texts: list[str], source: AdapterSource) -> tuple[Adapter, ...]:
    """Every --lora parsed, present on this machine (pulled if on the Hub) and read."""
    requests = [parse_lora(t) for t in texts]
    check_adapter_count(requests)
    adapters = []
    for req in requests:
        if isinstance(req.ref, HubAdapterRef):
            path = source.pull(req.ref)
        else:
            path = source.local_file(req.ref.path)
        adapters.append(Adapter(req.ref.text, path, req.scale, source.facts(path, req.ref.text)))
    return tuple(adapters)
