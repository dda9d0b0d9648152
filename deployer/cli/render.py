"""`deployer render`: the files to run a plan by hand (compose, systemd, launchd, k8s)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import echo, styled
from deployer.cli.params import DetectOpt, ProfileOpt
from deployer.core.model.facts import ModelFacts
from deployer.core.serve.llama_flags import PINNED_BUILD

# Where `deployer pull --local-dir` puts weights that are not in the Hugging Face cache yet.
PULL_DIR = PurePosixPath("/models")


@dataclass(frozen=True)
class WeightsLocation:
    """The host path the weights have (or will have), and the pull that fetches them if absent."""

    path: Path
    pull_command: str | None = None


def _hf_cache_file(repo_id: str, filename: str) -> Path | None:
    """The file in the Hugging Face cache (the snapshot refs/main points at first), if there."""
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    repo_dir = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    main = repo_dir / "refs" / "main"
    revisions = [main.read_text().strip()] if main.is_file() else []
    snapshots = repo_dir / "snapshots"
    if snapshots.is_dir():
        revisions += sorted(p.name for p in snapshots.iterdir())
    for rev in revisions:
        candidate = snapshots / rev / filename
        if candidate.is_file():
            return candidate
    return None


def weights_location(ref: str, facts: ModelFacts) -> WeightsLocation:
    """Real path for demo and local files; the HF cache if pulled; else where pull will put it."""
    from deployer.cli import wiring
    from deployer.core.model.resolve import HF_PREFIX, demo_model_path, parse_hf_ref, select_files

    if ref == "demo":
        return WeightsLocation(demo_model_path())
    if ref.lower().endswith(".gguf"):
        return WeightsLocation(Path(ref).expanduser().resolve())
    if ref.startswith(HF_PREFIX):
        hub_ref = parse_hf_ref(ref)
        hub = wiring.hub_reader()
        files = hub.list_gguf_files(hub_ref.repo_id, hub_ref.revision)  # type: ignore[attr-defined]
        repo_id = hub_ref.repo_id
        filename = select_files(files, facts.quant, ref)[0].name
        pull = shlex.join(
            [
                "deployer",
                "pull",
                f"{HF_PREFIX}{repo_id}:{facts.quant}",
                "--local-dir",
                str(PULL_DIR),
            ]
        )
    else:
        from deployer.core.model.catalog import get_quant

        entry = wiring.catalog_entry(ref)
        assert entry is not None
        _, qf = get_quant(entry, facts.quant)
        repo_id, filename = qf.repo, qf.file
        pull = shlex.join(
            ["deployer", "pull", entry.id, "--quant", facts.quant, "--local-dir", str(PULL_DIR)]
        )
    cached = _hf_cache_file(repo_id, filename)
    if cached is not None:
        return WeightsLocation(cached)
    return WeightsLocation(Path(str(PULL_DIR / filename)), pull)


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
    model: Annotated[
        str, typer.Argument(help="Catalog id, demo, a .gguf path or hf://ORG/REPO[:QUANT].")
    ],
    profile: ProfileOpt = None,
    detect: DetectOpt = False,
    backend: Annotated[str, typer.Option("--backend", help="llamacpp or ollama.")] = "llamacpp",
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
    name: Annotated[str | None, typer.Option("--name", help="Deployment name.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image to use.")] = None,
    runtime_version: Annotated[
        int, typer.Option("--runtime-version", help="llama.cpp build the flags are spelled for.")
    ] = PINNED_BUILD,
    load_mode: Annotated[
        str | None,
        typer.Option("--load-mode", help="How llama-server loads weights: mmap, mlock, none, dio."),
    ] = None,
    ctx: Annotated[int | None, typer.Option("--ctx", help="Context length (tokens).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Parallel slots.")] = 1,
    kv_type: Annotated[
        str, typer.Option("--kv-type", help="KV cache type: f16, q8_0, q4_0.")
    ] = "f16",
    quant: Annotated[str | None, typer.Option("--quant", help="Force a quantization.")] = None,
) -> None:
    """Write the files that run MODEL on PROFILE, with a README on running them by hand."""

    def body() -> None:
        from deployer.cli import wiring
        from deployer.core.serve.render import default_name, render_plan

        wiring.check_backend(backend)
        if out is not None:
            check_out_dir(out)
        prof = wiring.pick_profile(profile, detect)
        result = wiring.plan_for(
            model, prof, quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type, backend=backend
        )
        wiring.require_fit(result, model)
        dep_name = name or default_name(result.model)
        out_dir = (out or Path(f"deployer-{dep_name}")).resolve()
        weights = weights_location(model, result.chosen.facts)
        bundle = render_plan(
            result,
            backend=backend,
            target=target,
            model_path=weights.path,
            port=port,
            expose=expose,
            insecure=insecure,
            name=dep_name,
            runtime_version=runtime_version,
            image=image,
            api_key_file=out_dir / "secrets" / "api_key" if expose else None,
            load_mode=load_mode,
            pull_command=weights.pull_command,
        )
        written = bundle.write(out_dir)
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
