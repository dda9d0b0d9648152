"""`deployer models` commands: list and show catalog models."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli import models_view as view
from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import console, print_json
from deployer.cli.params import JsonOpt

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
                entry = view.model_json(m)
                fit = listing.fit_json(m.id)
                if fit is not None:
                    entry["fit"] = fit
                out.append(entry)
            print_json(out)
        elif profile:
            console.print(view.fit_table(models, fits))
        else:
            console.print(view.list_table(models))

    run_guarded(body)


@models_app.command("show")
def show_model(model_id: ModelIdArg, json_: JsonOpt = False) -> None:
    """Show one model: architecture, quant files with sizes, licence."""

    def body() -> None:
        from deployer.core.model.catalog import get_model

        model = get_model(model_id)
        if json_:
            print_json(view.model_json(model))
        else:
            console.print(view.show_table(model))
            console.print(view.quant_table(model))

    run_guarded(body)
