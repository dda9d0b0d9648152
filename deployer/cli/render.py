"""`deployer render`: the files to run a plan by hand (compose, systemd, launchd, k8s)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import echo, styled
from deployer.cli.params import (
    BackendOpt,
    CtxOpt,
    DetectOpt,
    KvTypeOpt,
    LoadModeOpt,
    LoraOpt,
    MaxLoadedOpt,
    ModelsArg,
    ModelsFileOpt,
    NameOpt,
    ParallelOpt,
    ProfileOpt,
    PromptCacheOpt,
    QuantOpt,
)
from deployer.core.serve.llama_flags import PINNED_BUILD


def check_out_dir(out: Path) -> None:
    """--out is one line of text and a folder (or nothing yet), never an existing file."""
    from deployer.core.errors import InvalidRequest
    from deployer.core.untrusted import UntrustedValue, check_line

    try:
        check_line(str(out), "--out", "folder")
    except UntrustedValue as exc:
        raise replace(exc, hint="Choose a folder name without it.") from None
    if out.exists() and not out.is_dir():
        raise InvalidRequest(
            f"--out {out} is an existing file, not a folder",
            "Pass a folder: it is created if missing, and only files deployer rendered "
            "there are replaced.",
        )


@app.command()
def render(
    models: ModelsArg = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    backend: BackendOpt = "llamacpp",
    target: Annotated[
        str | None,
        typer.Option("--target", help="compose, systemd, launchd or k8s (default: by profile)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default ./deployer-NAME).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port on this machine.")] = None,
    expose: Annotated[
        bool,
        typer.Option("--expose", help="Listen on all interfaces (llama.cpp: with an API key)."),
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow --expose for Ollama, which has no API key.")
    ] = False,
    name: NameOpt = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image to use.")] = None,
    runtime_version: Annotated[
        int, typer.Option("--runtime-version", help="llama.cpp build the flags are spelled for.")
    ] = PINNED_BUILD,
    load_mode: LoadModeOpt = None,
    prompt_cache: PromptCacheOpt = 0,
    ctx: CtxOpt = None,
    parallel: ParallelOpt = 1,
    kv_type: KvTypeOpt = "f16",
    quant: QuantOpt = None,
    max_loaded: MaxLoadedOpt = None,
    models_file: ModelsFileOpt = None,
    lora: LoraOpt = None,
) -> None:
    """Write the files that run MODEL on PROFILE, with a README on running them by hand."""
    if models_file is not None or len(models or []) != 1:
        from deployer.cli.render_several import render_several_cmd

        return render_several_cmd(
            models or [], models_file, profile=profile, detect=detect, backend=backend,
            target=target, out=out, port=port, expose=expose, name=name, image=image,
            runtime_version=runtime_version, load_mode=load_mode, ctx=ctx, parallel=parallel,
            kv_type=kv_type, quant=quant, max_loaded=max_loaded, lora=lora,
            prompt_cache_mib=prompt_cache,
        )  # fmt: skip
    model = models[0] if models else ""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.core.fit.multi import check_max_loaded
        from deployer.core.model.ref import parse_model_ref
        from deployer.core.serve.prepare import (
            PlanInputs,
            RenderOptions,
            deployment_name,
            plan_fitting,
            prepare,
        )

        wiring.check_backend(backend)
        check_max_loaded(max_loaded, 1)  # one model: --max-loaded 2+ means nothing
        if image is not None:
            from deployer.core.untrusted import check_image

            check_image(image, "--image")
        if out is not None:
            check_out_dir(out)
        prof = wiring.pick_profile(profile, detect)
        ref = parse_model_ref(model)
        inputs = PlanInputs(quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type,
                            backend=backend, load_mode=load_mode,
                            adapters=wiring.load_adapters(lora),
                            prompt_cache_mib=prompt_cache)  # fmt: skip
        result = plan_fitting(ref, prof, inputs, wiring.plan_for)
        dep_name = deployment_name(result, name)
        out_dir = (out or Path(f"deployer-{dep_name}")).resolve()
        options = RenderOptions(
            backend=backend, target=target, port=port, expose=expose, insecure=insecure,
            runtime_version=runtime_version, image=image, load_mode=load_mode,
            api_key_file=out_dir / "secrets" / "api_key" if expose else None,
        )  # fmt: skip
        prepared = prepare(
            ref, result, name=dep_name, locate=wiring.locate_weights, options=options
        )
        bundle, weights = prepared.bundle, prepared.weights
        written = wiring.write_bundle(out_dir, bundle.files)
        echo(
            "rendered ", styled(bundle.name, "bold"),
            f": {result.model} {result.chosen.facts.quant} on {prof.id}, {backend} via {bundle.target}",
        )  # fmt: skip
        for path in written:
            echo(f"  wrote {path}", soft_wrap=True)
        if weights.pull_command:
            echo(f"weights not here yet: {weights.pull_command}", soft_wrap=True)
        echo(f"next: see {out_dir / 'README.md'}", soft_wrap=True)

    run_guarded(body)
