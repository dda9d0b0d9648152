"""`deployer deploy MODEL MODEL... --name NAME`: several models behind one router endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deployer.cli.deploy_view import WaitProgress, print_deployed, print_dry_run, say_err
from deployer.cli.errors import run_guarded
from deployer.cli.output import echo

if TYPE_CHECKING:
    from deployer.core.serve.router import ModelEntry


def entries_for(
    models: list[str], models_file: Path | None, lora: list[str] | None = None
) -> list[ModelEntry]:
    """The MODEL arguments, or the models file's entries (not both)."""
    from deployer.adapters.router_files import read_models_file
    from deployer.core.errors import InvalidRequest
    from deployer.core.serve.router import entries_from_refs, parse_models_file

    if lora:
        raise InvalidRequest(
            "--lora applies to one model; several models behind a router take none yet",
            "Deploy the model with its adapter on its own.",
        )
    if models_file is not None:
        if models:
            raise InvalidRequest("give MODEL arguments or --models-file, not both")
        return parse_models_file(read_models_file(models_file), str(models_file))
    return entries_from_refs(models)


def deploy_several_cmd(
    models: list[str], models_file: Path | None, *, profile: str | None, detect: bool,
    backend: str, name: str | None, port: int | None, expose: bool, image: str | None,
    runtime: str | None, ctx: int | None, parallel: int, kv_type: str, quant: str | None,
    load_mode: str | None, memory_limit: str | None, accept_license: bool,
    timeout_s: float | None, dry_run: bool, as_json: bool, max_loaded: int | None,
    lora: list[str] | None = None, prompt_cache_mib: int = 0,
) -> None:  # fmt: skip
    """Plan every model, check the sets that load together, run the router and prove it."""

    def body() -> None:
        from deployer.adapters.router_files import FilePresetStore
        from deployer.cli import wiring
        from deployer.core.errors import InvalidRequest
        from deployer.core.serve.deploy_flow import DryRun, check_flags, parse_memory_limit
        from deployer.core.serve.multi_flow import SeveralRequest, deploy_several
        from deployer.core.serve.prepare import PlanInputs
        from deployer.core.untrusted import check_image

        wiring.check_backend(backend)
        if image is not None:
            check_image(image, "--image")
        check_flags(backend=backend, port=port, expose=expose, insecure=False,
                    timeout_s=timeout_s, runtime=runtime, memory_limit=memory_limit)  # fmt: skip
        if runtime == "native":
            raise InvalidRequest("several models run in a container", "Drop --runtime native.")
        if name is None:
            raise InvalidRequest("several models need a deployment name", "Pass --name NAME.")
        entries = entries_for(models, models_file, lora)
        prof = wiring.pick_profile(profile, detect)
        inputs = PlanInputs(quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type.lower(),
                            backend=backend, load_mode=load_mode,
                            prompt_cache_mib=prompt_cache_mib)  # fmt: skip
        req = SeveralRequest(
            entries=entries, profile=prof, inputs=inputs, name=name, max_loaded=max_loaded,
            port=port, expose=expose, image=image, accept_license=accept_license,
            timeout_s=timeout_s, dry_run=dry_run,
            memory_limit_bytes=parse_memory_limit(memory_limit) if memory_limit else None,
        )  # fmt: skip
        progress = None if as_json else WaitProgress(say_err)
        done = deploy_several(req, wiring.deploy_edges(say_err), FilePresetStore(), progress)
        if isinstance(done, DryRun):
            print_dry_run(done, as_json=as_json)
            return
        print_deployed(done, as_json=as_json)
        if not as_json:
            names = [e.name for e in entries]
            echo(f"models: {', '.join(names)} (a request picks one by its \"model\" field; "
                 f"'deployer ps' shows which are loaded)", soft_wrap=True)  # fmt: skip

    run_guarded(body)
