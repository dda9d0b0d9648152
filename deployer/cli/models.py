"""`deployer models` commands: list and show catalog models."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import cells, console, line, print_json
from deployer.cli.params import JsonOpt
from deployer.core.errors import NotFoundError
from deployer.core.units import GB

if TYPE_CHECKING:  # pydantic models load only when a command runs (fast --help)
    from deployer.core.fit.plan import PlanResult
    from deployer.core.hardware.profiles import Profile
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

# A filter keeps or drops one model; `list` applies every filter it is given, so later
# options (a hardware profile, a licence) only add a filter here.
ModelFilter = Callable[["CatalogModel"], bool]


class FamilyNotFound(NotFoundError):
    """No catalog model belongs to that family."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__("model family", name, close_matches, "Run 'deployer models list'.")


def family_filter(family: str, catalog: dict[str, CatalogModel]) -> ModelFilter:
    """A filter for one family (case-insensitive); FamilyNotFound when no model has it."""
    families = sorted({m.family for m in catalog.values()})
    wanted = family.lower()
    if wanted not in families:
        raise FamilyNotFound(family, difflib.get_close_matches(wanted, families, n=3, cutoff=0.5))
    return lambda model: model.family == wanted


def select_models(
    catalog: dict[str, CatalogModel], filters: Iterable[ModelFilter] = ()
) -> list[CatalogModel]:
    """Models that pass every filter, by family and then size."""
    checks = list(filters)
    kept = [m for m in catalog.values() if all(check(m) for check in checks)]
    return sorted(kept, key=lambda m: (m.family, m.params_b, m.id))


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


def fits_filter(profile: Profile, ctx: int | None, fits: dict[str, PlanResult]) -> ModelFilter:
    """A filter keeping models with a quant that fits `profile` fully; records each plan."""

    def check(model: CatalogModel) -> bool:
        if ctx is not None and ctx > model.arch.ctx_train:
            return False
        from deployer.core.fit.plan import PlanRequest, make_plan
        from deployer.core.model.weights import facts_from_catalog

        facts = [facts_from_catalog(model, q) for q in model.quants]
        result = make_plan(model.id, facts, profile, PlanRequest(ctx=ctx))
        if result.fits:
            fits[model.id] = result
        return result.fits

    return check


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
        from deployer.core.hardware.profiles import get_profile
        from deployer.core.model.catalog import load_catalog

        catalog = load_catalog()
        filters: list[ModelFilter] = []
        if family:
            filters.append(family_filter(family, catalog))
        fits: dict[str, PlanResult] = {}
        if profile:
            filters.append(fits_filter(get_profile(profile), ctx, fits))
        models = select_models(catalog, filters)
        if json_:
            out = []
            for m in models:
                entry = model_json(m)
                if m.id in fits:
                    d = fits[m.id].as_dict()
                    entry["fit"] = {
                        k: d[k]
                        for k in (
                            "profile",
                            "quant",
                            "ctx",
                            "n_gpu_layers",
                            "predicted_tokens_per_s",
                        )
                    } | {"total_bytes": d["memory"]["total_bytes"]}
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
