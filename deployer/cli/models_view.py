"""What `deployer models` prints: the catalog list, one model in full, the models that fit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from deployer.cli.output import cells, line
from deployer.core.units import GB

if TYPE_CHECKING:  # pydantic models load only when a command runs (fast --help)
    from deployer.core.fit.plan import PlanResult
    from deployer.core.model.catalog import CatalogModel


def model_json(model: CatalogModel) -> dict[str, Any]:
    """A catalog model as JSON data (the YAML fields, bytes unchanged)."""
    return model.model_dump(mode="json")


def _params(model: CatalogModel) -> str:
    return f"{model.params_b:g}B"


def _ctx(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


def _arch(model: CatalogModel) -> str:
    arch = model.arch
    text = arch.architecture
    if arch.n_expert:
        text += f" MoE {arch.n_expert_used}/{arch.n_expert}"
    return text


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _gb(nbytes: int) -> str:
    return f"{nbytes / GB:.2f}"


def _quant_range(model: CatalogModel) -> str:
    labels = sorted(model.quants, key=lambda label: model.quants[label].bytes)
    if len(labels) == 1:
        return labels[0]
    return f"{len(labels)}: {labels[0]}..{labels[-1]}"


def list_table(models: list[CatalogModel]) -> Table:
    """Every model in one row: size, architecture, context, quants, licence."""
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("arch")
    table.add_column("ctx", justify="right")
    table.add_column("quants", no_wrap=True)
    table.add_column("licence", no_wrap=True)
    table.add_column("gated")
    for m in models:
        table.add_row(
            *cells(
                m.id,
                _params(m),
                _arch(m),
                _ctx(m.arch.ctx_train),
                _quant_range(m),
                m.license.id,
                _yes_no(m.license.gated),
            )
        )
    return table


def _arch_rows(model: CatalogModel) -> list[tuple[str, str]]:
    a = model.arch
    rows = [
        ("architecture", a.architecture),
        ("layers", str(a.n_layer)),
        ("n_embd", str(a.n_embd)),
        ("heads", f"{a.n_head} query, {a.n_head_kv} KV, head_dim {a.head_dim}"),
        ("n_ff", f"{a.n_ff}" + (" per expert" if a.n_expert else "")),
        ("vocabulary", str(a.n_vocab) + (f", {a.n_merges} BPE merges" if a.n_merges else "")),
        ("trained context", f"{a.ctx_train} tokens"),
        ("tied embeddings", _yes_no(a.tied_embeddings)),
    ]
    if a.n_expert:
        rows.append(("experts", f"{a.n_expert_used} of {a.n_expert} per token"))
    if a.sliding_window:
        rows.append(("sliding window", f"{a.sliding_window} tokens, {a.swa_pattern}"))
    if a.kv_lora_rank:
        rows.append(("MLA", f"kv_lora_rank {a.kv_lora_rank}, n_rot {a.n_rot}"))
    return rows


def show_table(model: CatalogModel) -> Table:
    """One model in full: architecture and licence."""
    lic = model.license
    rows: list[tuple[str, str]] = [
        ("id", model.id),
        ("name", model.name),
        ("family", model.family),
        ("parameters", f"{model.params_b:g} billion"),
        ("base model", model.hf_base_model),
        *_arch_rows(model),
        ("licence", f"{lic.id} ({lic.url})"),
        ("gated repo", _yes_no(lic.gated)),
        ("restricts use", _yes_no(lic.restricts_use)),
        ("commercial use", lic.commercial_use),
        ("default quant", model.default_quant),
        ("notes", model.notes or "-"),
        ("source", model.source),
    ]
    table = Table("field", "value", show_header=False)
    for key, value in rows:
        table.add_row(*cells(key, value))
    return table


def quant_table(model: CatalogModel) -> Table:
    """One model's quant files with sizes, smallest first."""
    table = Table(title=line(model.id, " quants"))
    table.add_column("quant", no_wrap=True)
    table.add_column("GB", justify="right")
    table.add_column("parts", justify="right")
    table.add_column("repo", overflow="fold")
    table.add_column("file", overflow="fold")
    table.add_column("size source")
    for label, qf in sorted(model.quants.items(), key=lambda item: item[1].bytes):
        mark = " (default)" if label == model.default_quant else ""
        table.add_row(
            *cells(label + mark, _gb(qf.bytes), qf.split_parts, qf.repo, qf.file, qf.size_source)
        )
    return table


def fit_table(models: list[CatalogModel], fits: dict[str, PlanResult]) -> Table:
    """The models that fit a profile, with the plan for each."""
    title = line("models that fit ", next(iter(fits.values())).profile.id) if fits else ""
    table = Table(title=title)
    for col in ("id", "params", "best quant", "ctx", "GPU layers", "memory", "tokens/s", "licence"):
        table.add_column(col)
    for m in models:
        d = fits[m.id].as_dict()
        table.add_row(
            *cells(
                m.id,
                _params(m),
                d["quant"],
                d["ctx"],
                d["n_gpu_layers"],
                f"{d['memory']['total_bytes'] / 2**30:.1f} GiB",
                d["predicted_tokens_per_s"],
                m.license.id,
            )
        )
    return table
