"""`deployer deploy`: the one command: plan, pull, render, run, wait healthy, prove."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import echo, print_block, print_json, styled
from deployer.cli.params import DetectOpt, JsonOpt, ProfileOpt


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


IMAGE_SOURCES = ("auto", "official", "local")


def choose_image(
    engine: Any, official: str, kind: str, given: str | None, backend: str = "llamacpp"
) -> tuple[str, str]:
    """The image to run and why: --image; else as DEPLOYER_IMAGE_SOURCE says:

    - auto (default): the official image when present or pullable, else (CPU, llama.cpp) the
      local build;
    - official: the official image only, never a local build;
    - local: no registry is contacted (air-gapped sites): the official image if it was loaded
      by hand, else the local build.
    """
    from deployer.adapters.image_build import build_runtime_image
    from deployer.core.errors import ImageMissing, InvalidRequest

    if given:
        return given, f"{given} (--image)"
    source = os.environ.get("DEPLOYER_IMAGE_SOURCE", "auto").strip().lower() or "auto"
    if source not in IMAGE_SOURCES:
        raise InvalidRequest(
            f"DEPLOYER_IMAGE_SOURCE is '{source}'",
            "Set it to auto, official or local (or unset it).",
        )
    if engine.image_info(tag=official) is not None:
        return official, f"{official} (official, present)"
    if source != "local" and engine.try_pull(tag=official):
        return official, f"{official} (official, pulled)"
    if source == "official" or backend == "ollama" or kind != "cpu":
        # No local build of Ollama or of a GPU image: it must be pulled or loaded.
        raise ImageMissing(official, backend)
    built = build_runtime_image(engine=engine)
    how = "built locally just now" if built.built else "local build"
    why = (
        "DEPLOYER_IMAGE_SOURCE=local, no registry contacted"
        if source == "local"
        else f"{official} could not be pulled, no registry reachable"
    )
    return built.tag, f"{built.tag} ({how}: {why})"


def best_catalog_model(prof: Any) -> str:
    """Without MODEL: the largest catalog model that fits fully at a usable speed."""
    from deployer.core.fit.plan import PlanRequest, make_plan
    from deployer.core.model.catalog import load_catalog
    from deployer.core.model.weights import facts_from_catalog

    best: tuple[float, str] | None = None
    for m in load_catalog().values():
        facts = [facts_from_catalog(m, q) for q in m.quants]
        result = make_plan(m.id, facts, prof, PlanRequest())
        if (
            result.fits
            and result.chosen.tokens_per_s >= 15
            and (best is None or m.params_b > best[0])
        ):
            best = (m.params_b, m.id)
    return best[1] if best else "demo"


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
        from deployer.adapters.ports import check_port_free, choose_port
        from deployer.cli import wiring
        from deployer.cli.pull import hub_store
        from deployer.core.errors import InvalidRequest
        from deployer.core.pull.files import pull_model
        from deployer.core.serve.deploy import check_name_free, with_limits
        from deployer.core.serve.deploy import deploy as run_deploy
        from deployer.core.serve.render import check_exposure, default_name, render_plan
        from deployer.core.state.records import check_name
        from deployer.core.untrusted import check_port

        wiring.check_backend(backend)
        if port is not None:
            check_port(port, "--port")  # 0 would otherwise mean "pick one", not port 0
        check_exposure(backend, expose=expose, insecure=insecure)  # before any download
        if timeout_s is not None and not 0 < timeout_s <= 86400:  # NaN and inf fail too
            raise InvalidRequest(f"--timeout {timeout_s:g} is not in (0, 86400] seconds")
        if runtime not in (None, "container", "native"):
            raise InvalidRequest(f"unknown runtime '{runtime}'", "Use container or native.")
        prof = wiring.pick_profile(profile, detect)
        how = runtime or ("native" if prof.kind == "apple" else "container")
        if how == "native" and backend != "llamacpp":
            raise InvalidRequest(
                "the native runtime runs llama-server only",
                "Use --backend llamacpp, or --runtime container.",
            )
        ref = model or best_catalog_model(prof)
        result = wiring.plan_for(
            ref, prof, quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type, backend=backend
        )
        wiring.require_fit(result, ref)
        dep_name = name or default_name(result.model)
        # The name first: a refusal must come before any key, file, volume or container.
        records = wiring.record_store()
        check_name_free(check_name(dep_name), records=records)
        host_ip = "0.0.0.0" if expose else "127.0.0.1"
        picked = choose_port(dep_name, port, host_ip)
        host_port = picked.port
        if not dry_run:
            check_port_free(host_ip, host_port)  # before the download, not after it
        port_note = f"port: {host_port} ({picked.why})"
        chosen_quant = result.chosen.facts.quant
        if how == "native":
            if not dry_run:
                _say_err(port_note)
            deploy_native_cli(
                result=result,
                ref=ref,
                name=dep_name,
                port=host_port,
                expose=expose,
                accept_license=accept_license,
                timeout_s=timeout_s,
                dry_run=dry_run,
                as_json=as_json,
            )
            return
        if dry_run:
            weights_path = Path(f"/models/{dep_name}.gguf")
            if ref == "demo" or ref.lower().endswith(".gguf"):
                pulled = pull_model(ref, quant)
                weights_path = pulled.path
            else:
                from deployer.cli.render import weights_location

                weights_path = weights_location(ref, result.chosen.facts).path
            bundle = render_plan(
                result,
                backend=backend,
                target="compose",
                model_path=weights_path,
                port=host_port,
                expose=expose,
                insecure=insecure,
                name=dep_name,
                image=image,
            )
            key_note = "(generated at deploy time)" if expose and backend == "llamacpp" else None
            spec = bundle.container_spec()
            if backend == "llamacpp":
                spec = with_limits(spec, result)  # as deploy() runs it
            out = {
                "plan": result.as_dict(),
                "weights": str(weights_path),
                "files": bundle.files,
                "container": {
                    "name": spec.name,
                    "image": spec.image,
                    "command": spec.command,
                    "labels": spec.labels,
                    "mounts": [m.__dict__ for m in spec.mounts],
                    "ports": f"{spec.host_ip}:{spec.host_port}->{spec.container_port}",
                    "user": spec.user,
                    "gpus": spec.gpus,
                    "read_only_rootfs": spec.read_only_rootfs,
                    "cap_drop": spec.cap_drop,
                    "security_opt": spec.security_opt,
                    "health": spec.health.__dict__ if spec.health else None,
                    "api_key_file": key_note,
                    "env": spec.env,
                    "tmpfs": spec.tmpfs,
                    "restart_policy": spec.restart_policy,
                    "memory_limit_bytes": spec.memory_limit_bytes,
                    "pids_limit": spec.pids_limit,
                    "volumes": [v.__dict__ for v in bundle.volume_specs()],
                },
            }
            if backend == "ollama":
                from deployer.core.serve.deploy import smoke_kind_for

                proof_step = (
                    "POST /v1/chat/completions (8 tokens)"
                    if smoke_kind_for(result) == "chat"
                    else "POST /api/generate (raw completion, 8 tokens)"
                )
                out["ollama_create"] = {
                    "model": dep_name,
                    "from": str(weights_path),
                    "parameters": bundle.model_parameters,
                    "template": bundle.model_template,
                    "steps": ["GET /api/version", "POST /api/blobs/sha256:<digest> (once)",
                              "POST /api/create", proof_step],
                }  # fmt: skip
            if as_json:
                print_json(out)
            else:
                print_block(json.dumps(out["container"], indent=2))
                for rel, text in bundle.files.items():
                    echo(f"--- {rel}", soft_wrap=True)
                    print_block(text)
            return

        from deployer.adapters.smoke import llama_server_smoke, ollama_smoke
        from deployer.cli.runtime import docker_engine

        engine = docker_engine()
        engine.engine_available()
        check_name_free(
            dep_name, engine, records=records
        )  # a labelled container without a record: the same
        say = _say_err
        say(
            f"plan: {result.model} {chosen_quant} on {prof.id} (ngl {result.chosen.memory.n_gpu_layers}, ctx {result.chosen.settings.ctx})"
        )
        say(port_note)
        store = None if ref == "demo" or ref.lower().endswith(".gguf") else hub_store()
        pulled = pull_model(
            ref,
            chosen_quant if ref != "demo" else quant,
            store=store,
            accept_license=accept_license,
        )
        say(f"weights: {pulled.path} (verified: {all(f.verified for f in pulled.files)})")
        bundle = render_plan(
            result,
            backend=backend,
            target="compose",
            model_path=pulled.path,
            port=host_port,
            expose=expose,
            insecure=insecure,
            name=dep_name,
            image=image,
        )
        official = bundle.image or ""
        run_image, image_note = choose_image(engine, official, prof.kind, image, backend)
        say(f"image: {image_note}")
        from dataclasses import replace

        bundle = replace(bundle, image=run_image)
        if backend == "ollama":
            from deployer.adapters.ollama import create_in_server
            from deployer.core.serve.ollama_deploy import deploy_ollama

            if expose:
                say("warning: --expose --insecure: Ollama has no API key; anyone who reaches "
                    f"port {host_port} can use the server")  # fmt: skip
            done = deploy_ollama(
                result=result,
                bundle=bundle,
                engine=engine,
                create=create_in_server,
                smoke=ollama_smoke,
                model_path=pulled.path,
                model_files=[f.path for f in pulled.files],
                image_source=image_note,
                records=records,
                clock=wiring.clock(),
                timeout_s=timeout_s,
                on_progress=None if as_json else WaitProgress(say),
            )
            print_deployed(done, as_json=as_json)
            return
        keys = wiring.secret_store()
        key_file = keys.write_api_key(dep_name) if expose and backend == "llamacpp" else None
        done = run_deploy(
            result=result,
            bundle=bundle,
            engine=engine,
            smoke=llama_server_smoke,
            model_files=[f.path for f in pulled.files],
            api_key_file=key_file,
            image_source=image_note,
            records=records,
            keys=keys,
            clock=wiring.clock(),
            timeout_s=timeout_s,
            on_progress=None if as_json else WaitProgress(say),
        )
        print_deployed(done, as_json=as_json)

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
        auth = f' -H "Authorization: Bearer $(cat {rec.api_key_path})"'
    echo(
        f"curl {rec.endpoint}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f'-d \'{{"model": "{served}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
        soft_wrap=True,
    )
    key_py = f"open('{rec.api_key_path}').read().strip()" if rec.api_key_path else "'none'"
    echo(
        f"python: from openai import OpenAI; c = OpenAI(base_url='{rec.endpoint}/v1', api_key={key_py}); "
        f"print(c.chat.completions.create(model='{served}', messages=[{{'role': 'user', 'content': 'Hello'}}]).choices[0].message.content)",
        soft_wrap=True,
    )
    if rec.runtime == "native":
        echo(f"pid {rec.pid}, log: {rec.log_path} (deployer logs {rec.name})")
    echo(f"tear down: deployer down {rec.name}")


def deploy_native_cli(
    *,
    result: Any,
    ref: str,
    name: str,
    port: int,
    expose: bool,
    accept_license: bool,
    timeout_s: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """`deploy --runtime native`: llama-server as a supervised local process."""
    from deployer.adapters import native
    from deployer.adapters.smoke import llama_server_smoke
    from deployer.cli import wiring
    from deployer.cli.pull import hub_store
    from deployer.core.pull.files import pull_model
    from deployer.core.serve.deploy import check_name_free, deploy_native
    from deployer.core.serve.render import render_plan

    say = _say_err
    records, keys = wiring.record_store(), wiring.secret_store()
    check_name_free(name, records=records)  # before a new key could touch the running one's
    binary = native.find_llama_server()
    local = ref == "demo" or ref.lower().endswith(".gguf")
    pulled = pull_model(
        ref,
        result.chosen.facts.quant if ref != "demo" else result.request.quant,
        store=None if local else hub_store(),
        accept_license=accept_license,
    )
    key_path = keys.api_key_path(name) if expose else None
    bundle = render_plan(
        result,
        backend="llamacpp",
        target="launchd" if result.profile.kind == "apple" else "systemd",
        model_path=pulled.path,
        port=port,
        expose=expose,
        name=name,
        binary=str(binary),
        api_key_file=key_path,
    )
    if dry_run:
        out = {"plan": result.as_dict(), "weights": str(pulled.path), "argv": bundle.native_argv()}
        if as_json:
            print_json(out)
        else:
            echo(json.dumps(out["argv"]), soft_wrap=True)
        return
    say(f"weights: {pulled.path} (verified: {all(f.verified for f in pulled.files)})")
    say(f"server: {binary} (native, pid and log under the state dir)")
    key_file = keys.write_api_key(name, for_container=False) if expose else None
    log_path = native.log_path_for(name)
    done = deploy_native(
        result=result,
        bundle=bundle,
        runtime=native.NativeSupervisor(),
        smoke=llama_server_smoke,
        model_files=[f.path for f in pulled.files],
        api_key_file=key_file,
        log_path=log_path,
        records=records,
        keys=keys,
        clock=wiring.clock(),
        timeout_s=timeout_s,
        on_progress=None if as_json else WaitProgress(say),
    )
    print_deployed(done, as_json=as_json)
