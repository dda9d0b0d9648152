"""`deployer plan MODEL MODEL...`: each model's plan and which sets of them fit together."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from deployer.cli.errors import run_guarded
from deployer.cli.output import console, echo, print_json, styled
from deployer.core.units import fmt_bytes

if TYPE_CHECKING:
    from deployer.core.fit.multi import MultiPlan


def show_several(plan: MultiPlan) -> None:
    """Human view: the models, then every set of --max-loaded models and whether it fits."""
    from deployer.core.fit.multi import ROUTER_OVERHEAD_BYTES, explain

    prof = plan.results[0].profile
    verdict = styled("fits", "green") if plan.fits else styled("does not fit", "red")
    echo(
        styled(", ".join(plan.names), "bold"), " on ", styled(prof.id, "bold"),
        f", at most {plan.max_loaded} loaded: ", verdict,
    )  # fmt: skip
    models = Table(title="models", show_edge=False)
    for col in ("name", "model", "quant", "ctx", "host", "GPU", "alone"):
        models.add_column(col)
    for name, r in zip(plan.names, plan.results, strict=True):
        mem = r.chosen.memory
        models.add_row(
            name, r.model, r.chosen.facts.quant, str(r.chosen.settings.ctx),
            fmt_bytes(mem.host.total_bytes),
            fmt_bytes(sum(d.total_bytes for d in mem.devices)) if mem.devices else "-",
            "fits" if r.fits else "does not fit",
        )  # fmt: skip
    console.print(models)
    sets = Table(title=f"sets of {plan.max_loaded} loaded together", show_edge=False)
    for col in ("models", "host (with router)", "GPU", "fits"):
        sets.add_column(col)
    for c in plan.combinations:
        sets.add_row(" + ".join(c.names), fmt_bytes(c.host_bytes),
                     ", ".join(fmt_bytes(d) for d in c.device_bytes) or "-",
                     "yes" if c.fits else "no")  # fmt: skip
    console.print(sets)
    echo(
        f"budget: {fmt_bytes(plan.host_budget_bytes)} host"
        + "".join(f", {fmt_bytes(b)} GPU{i}" for i, b in enumerate(plan.device_budget_bytes))
        + f"; router process {fmt_bytes(ROUTER_OVERHEAD_BYTES)}"
    )
    echo(
        f"memory limit: {fmt_bytes(plan.memory_request_bytes)} for the largest set "
        f"({' + '.join(plan.largest.names)}) plus headroom; {explain(plan)}",
        soft_wrap=True,
    )


def plan_several_cmd(
    models: list[str], models_file: Path | None, *, profile: str | None, detect: bool,
    ctx: int | None, parallel: int, kv_type: str, quant: str | None, backend: str,
    load_mode: str | None, max_loaded: int | None, as_json: bool, lora: list[str] | None = None,
    prompt_cache_mib: int = 0,
) -> None:  # fmt: skip
    """Plan several models for one router deployment."""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.cli.deploy_several import entries_for
        from deployer.core.errors import InvalidRequest
        from deployer.core.serve.multi_flow import largest_result, plan_json, plan_several
        from deployer.core.serve.prepare import PlanInputs

        if not models and models_file is None:
            raise InvalidRequest("no model given", "Pass MODEL (or several), or --models-file.")
        wiring.check_backend(backend)
        entries = entries_for(models, models_file, lora)
        prof = wiring.pick_profile(profile, detect)
        inputs = PlanInputs(quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type.lower(),
                            backend=backend, load_mode=load_mode,
                            prompt_cache_mib=prompt_cache_mib)  # fmt: skip
        plan = plan_several(entries, prof, inputs, wiring.plan_for, max_loaded)
        if as_json:
            print_json(plan_json(plan, largest_result(plan).as_dict()))
        else:
            show_several(plan)
        if not plan.fits:
            raise typer.Exit(1)

    run_guarded(body)
