"""`deployer models` commands: list and show catalog models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, line, print_json
from deployer.cli.params import JsonOpt
from deployer.core.units import GB

if TYPE_CHECKING:  # pydantic models load only when a command runs (fast --help)
    from deployer.core.fit.plan import PlanResult
    from deployer.core.model.catalog import CatalogModel

models_app = typer.Typer(
    name="models",
    help="The model catalog: architectures, quant files and licences.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

ModelIdArg = Annotated[str, typer.Argument(help="Model id (deployer models list).")]
FamilyOpt = Annotated[
    str | None, typer.Option("--family", "-f", help="Only this family, e.g. llama3, qwen3, gemma3.")
]


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


def _list_table(models: list[CatalogModel]) -> Table:
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
        ("vocabulary", str(a.n_vocab)),
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


def _show_table(model: CatalogModel) -> Table:
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


def _quant_table(model: CatalogModel) -> Table:
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


def _fit_table(models: list[CatalogModel], fits: dict[str, PlanResult]) -> Table:
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


ProfileFilterOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Only models that fit this profile fully."),
]
CtxOpt = Annotated[int | None, typer.Option("--ctx", help="Context to fit (with --profile).")]


@models_app.command("list")
def list_models(
    family: FamilyOpt = None,
    profile: ProfileFilterOpt = None,
    ctx: CtxOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List catalog models (shipped and yours), optionally only those that fit a profile."""

    def body() -> None:
        from deployer.core.fit.catalog_list import list_models as listing_of
        from deployer.core.hardware.profiles import get_profile
        from deployer.core.model.catalog import load_catalog

        catalog = load_catalog()
        listing = listing_of(
            catalog,
            family=family,
            profile=(lambda: get_profile(profile)) if profile else None,
            ctx=ctx,
        )
        models, fits = listing.models, listing.fits
        if json_:
            out = []
            for m in models:
                entry = model_json(m)
                fit = listing.fit_json(m.id)
                if fit is not None:
                    entry["fit"] = fit
                out.append(entry)
            print_json(out)
        elif profile:
            console.print(_fit_table(models, fits))
        else:
            console.print(_list_table(models))

    run_guarded(body)


@models_app.command("show")
def show_model(model_id: ModelIdArg, json_: JsonOpt = False) -> None:
    """Show one model: architecture, quant files with sizes, licence."""

    def body() -> None:
        from deployer.core.model.catalog import get_model

        model = get_model(model_id)
        if json_:
            print_json(model_json(model))
        else:
            console.print(_show_table(model))
            console.print(_quant_table(model))

    run_guarded(body)
