"""`deployer deploy`: the one command: plan, pull, render, run, wait healthy, prove."""

from __future__ import annotations

from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.deploy_view import WaitProgress, print_deployed, print_dry_run, say_err
from deployer.cli.errors import run_guarded
from deployer.cli.params import (
    BackendOpt,
    CtxOpt,
    DetectOpt,
    JsonOpt,
    KvTypeOpt,
    LoadModeOpt,
    LoraOpt,
    MaxLoadedOpt,
    ModelsFileOpt,
    ModelsOrBestArg,
    NameOpt,
    ParallelOpt,
    ProfileOpt,
    PromptCacheOpt,
    QuantOpt,
)


@app.command()
def deploy(
    models: ModelsOrBestArg = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    backend: BackendOpt = "llamacpp",
    name: NameOpt = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Host port (default: 8080 or the next free).")
    ] = None,
    expose: Annotated[
        bool, typer.Option("--expose", help="Listen on all interfaces, with an API key.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow --expose without an API key (Ollama).")
    ] = False,
    image: Annotated[str | None, typer.Option("--image", help="Container image to run.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="container or native (a supervised local llama-server; default on Macs).",
        ),
    ] = None,
    ctx: CtxOpt = None,
    parallel: ParallelOpt = 1,
    kv_type: KvTypeOpt = "f16",
    quant: QuantOpt = None,
    load_mode: LoadModeOpt = None,
    prompt_cache: PromptCacheOpt = 0,
    lora: LoraOpt = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            help="The container's memory cap, e.g. 300M or 2G (1024-based; default: the plan's "
            "host total plus max(64 MiB, 5%)). Under the plan it warns.",
        ),
    ] = None,
    accept_license: Annotated[
        bool, typer.Option("--accept-license", help="Accept a restrictive licence.")
    ] = False,
    timeout_s: Annotated[
        float | None,
        typer.Option("--timeout", help="Health wait, seconds (default: by model size)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan, files and container spec; run nothing."),
    ] = False,
    as_json: JsonOpt = False,
    max_loaded: MaxLoadedOpt = None,
    models_file: ModelsFileOpt = None,
) -> None:
    """Deploy MODEL and prove it with a real completion; print the endpoint.

    Several MODELs (or --models-file) run behind one endpoint: llama-server's router.
    """
    if models_file is not None or len(models or []) > 1:
        from deployer.cli.deploy_several import deploy_several_cmd

        return deploy_several_cmd(
            models or [], models_file, profile=profile, detect=detect, backend=backend, name=name,
            port=port, expose=expose, image=image, runtime=runtime, ctx=ctx, parallel=parallel,
            kv_type=kv_type, quant=quant, load_mode=load_mode, memory_limit=memory_limit,
            accept_license=accept_license, timeout_s=timeout_s, dry_run=dry_run, as_json=as_json,
            max_loaded=max_loaded, lora=lora, prompt_cache_mib=prompt_cache,
        )  # fmt: skip
    model = models[0] if models else None

    def body() -> None:
        from deployer.cli import wiring
        from deployer.core.fit.multi import check_max_loaded
        from deployer.core.model.ref import parse_model_ref
        from deployer.core.serve.deploy_flow import (
            DeployRequest,
            DryRun,
            check_flags,
            deploy_model,
            parse_memory_limit,
            runtime_for,
        )
        from deployer.core.serve.prepare import PlanInputs, best_catalog_model

        wiring.check_backend(backend)
        check_max_loaded(max_loaded, 1)  # one model: --max-loaded 2+ means nothing
        if image is not None:
            from deployer.core.untrusted import check_image

            check_image(image, "--image")
        check_flags(
            backend=backend, port=port, expose=expose, insecure=insecure, timeout_s=timeout_s,
            runtime=runtime, memory_limit=memory_limit,
        )  # fmt: skip
        prof = wiring.pick_profile(profile, detect)
        how = runtime_for(prof, runtime, backend)
        inputs = PlanInputs(quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type.lower(),
                            backend=backend, load_mode=load_mode,
                            adapters=wiring.load_adapters(lora),
                            prompt_cache_mib=prompt_cache)  # fmt: skip
        req = DeployRequest(
            ref=parse_model_ref(model or best_catalog_model(prof, inputs)), profile=prof, inputs=inputs,
            name=name, port=port, expose=expose, insecure=insecure, image=image, runtime=how,
            accept_license=accept_license, timeout_s=timeout_s, dry_run=dry_run,
            memory_limit_bytes=parse_memory_limit(memory_limit) if memory_limit else None,
        )  # fmt: skip
        progress = None if as_json else WaitProgress(say_err)
        done = deploy_model(req, wiring.deploy_edges(say_err), progress)
        if isinstance(done, DryRun):
            print_dry_run(done, as_json=as_json)
        else:
            print_deployed(done, as_json=as_json)

    run_guarded(body)
