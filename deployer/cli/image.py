"""`deployer image build`: the runtime image, built locally (no registry needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.app import app
from deployer.cli.errors import run_guarded
from deployer.cli.output import err_console, print_json
from deployer.cli.params import JsonOpt
from deployer.core.errors import CudaImageUnavailable, InvalidRequest
from deployer.core.units import MIB

image_app = typer.Typer(name="image", help="Runtime images, built locally.", no_args_is_help=True)
app.add_typer(image_app, name="image")


def cuda_blockers() -> list[str]:
    """Why a CUDA image cannot be built here; empty when nothing is missing."""
    reasons: list[str] = []
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if shutil.which("nvcc") is None and not (Path(cuda_home) / "bin" / "nvcc").is_file():
        reasons.append("no CUDA toolkit (nvcc not found on PATH or in $CUDA_HOME)")
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        reasons.append("no NVIDIA GPU or driver (/dev/nvidiactl and nvidia-smi absent)")
    if not reasons:
        reasons.append("the CUDA variant of the llama-server build is not implemented yet")
    return reasons


@image_app.command("build")
def build(
    backend: Annotated[
        str, typer.Option("--backend", help="Runtime to build an image for (llamacpp).")
    ] = "llamacpp",
    cuda: Annotated[bool, typer.Option("--cuda", help="Build the CUDA variant.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build deployer/llama-server:<llama.cpp version>-cpu from the cached llama.cpp build."""

    def go() -> None:
        if backend != "llamacpp":
            raise InvalidRequest(
                f"no local image build for backend '{backend}'",
                "Only --backend llamacpp has one; Ollama ships its own image",
            )
        if cuda:
            raise CudaImageUnavailable(cuda_blockers())
        from deployer.adapters.docker_engine import DockerEngine
        from deployer.adapters.image_build import build_runtime_image

        if not json_out:
            err_console.print("building the llama-server image (reused when present)...")
        result = build_runtime_image(engine=DockerEngine(), force=force)
        if json_out:
            print_json(result.as_dict())
            return
        size = f"{result.size_bytes / MIB:.1f} MiB"
        if result.built:
            typer.echo(f"built {result.tag} ({size}) in {result.seconds:.1f} s")
        else:
            typer.echo(f"{result.tag} is present ({size}); --force rebuilds it")

    run_guarded(go)
