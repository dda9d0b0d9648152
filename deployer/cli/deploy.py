"""`deployer deploy`: the one command: plan, pull, render, run, wait healthy, prove."""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import echo, print_block, print_json, styled
from deployer.cli.params import DetectOpt, JsonOpt, LoadModeOpt, ProfileOpt


class WaitProgress:
    """Waiting-for-healthy lines: one when the status changes, else one every `every_s`.

    Health is polled every 50 ms; a line per poll would be a wall of text.
    """

    def __init__(self, say: Any, every_s: float = 5.0) -> None:
        self._say = say
        self._every_s = every_s
        self._last_status: str | None = None
        self._last_t = 0.0

    def __call__(self, elapsed_s: float, status: str) -> None:
        if status == self._last_status and elapsed_s - self._last_t < self._every_s:
            return
        self._last_status, self._last_t = status, elapsed_s
        self._say(f"  {elapsed_s:5.1f}s {status}")


def _say_err(text: str) -> None:
    """A progress line on stderr, shown literally (it quotes paths, model and image names)."""
    echo(text, err=True)


@app.command()
def deploy(
    model: Annotated[
        str | None, typer.Argument(help="Catalog id, demo, a .gguf path or hf://ORG/REPO[:QUANT].")
    ] = None,
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    backend: Annotated[str, typer.Option("--backend", help="llamacpp or ollama.")] = "llamacpp",
    name: Annotated[str | None, typer.Option("--name", help="Deployment name.")] = None,
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
    ctx: Annotated[int | None, typer.Option("--ctx", help="Context length (tokens).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Parallel slots.")] = 1,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache type.")] = "f16",
    quant: Annotated[str | None, typer.Option("--quant", help="Force a quantization.")] = None,
    load_mode: LoadModeOpt = None,
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
) -> None:
    """Deploy MODEL and prove it with a real completion; print the endpoint."""

    def body() -> None:
        from deployer.cli import wiring
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
                            backend=backend, load_mode=load_mode)  # fmt: skip
        req = DeployRequest(
            ref=parse_model_ref(model or best_catalog_model(prof)), profile=prof, inputs=inputs,
            name=name, port=port, expose=expose, insecure=insecure, image=image, runtime=how,
            accept_license=accept_license, timeout_s=timeout_s, dry_run=dry_run,
            memory_limit_bytes=parse_memory_limit(memory_limit) if memory_limit else None,
        )  # fmt: skip
        progress = None if as_json else WaitProgress(_say_err)
        done = deploy_model(req, wiring.deploy_edges(_say_err), progress)
        if not isinstance(done, DryRun):
            print_deployed(done, as_json=as_json)
        elif as_json:
            print_json(done.out)
        elif done.native:
            echo(json.dumps(done.out["argv"]), soft_wrap=True)
        else:
            print_block(json.dumps(done.out["container"], indent=2))
            for rel, text in done.files.items():
                echo(f"--- {rel}", soft_wrap=True)
                print_block(text)

    run_guarded(body)


def print_deployed(done: Any, *, as_json: bool) -> None:
    """The endpoint, the smoke test's proof and how to call and tear down the deployment."""
    if as_json:
        print_json(done.as_dict())
        return
    from deployer.core.serve.proof import describe

    rec, s = done.record, done.smoke
    served = done.served_model or rec.model
    echo(
        styled("deployed", "green"), " ", styled(rec.name, "bold"),
        f": {rec.model} {rec.quant} at {rec.endpoint}/v1",
    )  # fmt: skip
    ttft = "n/a" if s.time_to_first_token_ms is None else f"{s.time_to_first_token_ms} ms"
    tps = "n/a" if s.tokens_per_s is None else f"{s.tokens_per_s}"
    echo(
        f"smoke test ({s.kind}): {s.completion_tokens} tokens in {s.seconds:.2f} s, "
        f"first token {ttft}, {tps} tokens/s: {describe(s)}",
        soft_wrap=True,  # one line, whatever the terminal width: greppable
    )
    for note in done.notes if rec.runtime == "container" else []:
        echo(note)
    auth = ""
    if rec.api_key_path:
        echo(f"API key: {rec.api_key_path} (mode 0600; never printed)")
        # quoted for the shell: on macOS the state dir is under "Application Support"
        auth = f' -H "Authorization: Bearer $(cat {shlex.quote(rec.api_key_path)})"'
    echo(
        f"curl {rec.endpoint}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"model": "{served}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
        soft_wrap=True,
    )
    key_py = f"open({rec.api_key_path!r}).read().strip()" if rec.api_key_path else "'none'"
    echo(
        f"python: from openai import OpenAI; c = OpenAI(base_url='{rec.endpoint}/v1', api_key={key_py}); "
        f"print(c.chat.completions.create(model='{served}', messages=[{{'role': 'user', 'content': 'Hello'}}]).choices[0].message.content)",
        soft_wrap=True,
    )
    if rec.runtime == "native":
        echo(f"pid {rec.pid}, log: {rec.log_path} (deployer logs {rec.name})")
    echo(f"tear down: deployer down {rec.name}")
