"""`deployer render MODEL MODEL... --name NAME`: the router's compose file, preset and README."""

from __future__ import annotations

from pathlib import Path

from deployer.cli.errors import run_guarded
from deployer.cli.output import echo, styled


def render_several_cmd(
    models: list[str], models_file: Path | None, *, profile: str | None, detect: bool,
    backend: str, target: str | None, out: Path | None, port: int | None, expose: bool,
    name: str | None, image: str | None, runtime_version: int, load_mode: str | None,
    ctx: int | None, parallel: int, kv_type: str, quant: str | None, max_loaded: int | None,
    lora: list[str] | None = None, prompt_cache_mib: int = 0,
) -> None:  # fmt: skip
    """Plan every model, refuse sets that do not fit, write the router's files."""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.cli.deploy_several import entries_for
        from deployer.cli.render import check_out_dir
        from deployer.core.errors import InvalidRequest
        from deployer.core.model.ref import parse_model_ref
        from deployer.core.serve.multi_flow import plan_several, render_several, require_fit
        from deployer.core.serve.prepare import PlanInputs, RenderOptions
        from deployer.core.state.records import check_name
        from deployer.core.untrusted import check_image

        if not models and models_file is None:
            raise InvalidRequest("no model given", "Pass MODEL (or several), or --models-file.")
        if name is None:
            raise InvalidRequest("several models need a deployment name", "Pass --name NAME.")
        wiring.check_backend(backend)
        if image is not None:
            check_image(image, "--image")
        if out is not None:
            check_out_dir(out)
        entries = entries_for(models, models_file, lora)
        prof = wiring.pick_profile(profile, detect)
        inputs = PlanInputs(quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type.lower(),
                            backend=backend, load_mode=load_mode,
                            prompt_cache_mib=prompt_cache_mib)  # fmt: skip
        plan = plan_several(entries, prof, inputs, wiring.plan_for, max_loaded)
        require_fit(plan)
        dep_name = check_name(name)
        out_dir = (out or Path(f"deployer-{dep_name}")).resolve()
        options = RenderOptions(
            backend=backend, target=target, port=port, expose=expose,
            runtime_version=runtime_version, image=image, load_mode=load_mode,
            api_key_file=out_dir / "secrets" / "api_key" if expose else None,
        )  # fmt: skip
        located = [
            wiring.locate_weights(parse_model_ref(e.ref_text), r.chosen.facts)
            for e, r in zip(entries, plan.results, strict=True)
        ]
        bundle = render_several(plan, name=dep_name, paths=[w.path for w in located],
                                options=options)  # fmt: skip
        written = wiring.write_bundle(out_dir, bundle.files)
        echo("rendered ", styled(bundle.name, "bold"),
             f": {', '.join(plan.names)} on {prof.id}, at most {plan.max_loaded} loaded, "
             f"llamacpp router via {bundle.target}")  # fmt: skip
        for path in written:
            echo(f"  wrote {path}", soft_wrap=True)
        for w in located:
            if w.pull_command:
                echo(f"weights not here yet: {w.pull_command}", soft_wrap=True)
        echo(f"next: see {out_dir / 'README.md'}", soft_wrap=True)

    run_guarded(body)
