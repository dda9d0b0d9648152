"""Build the llama-server runtime image locally: no registry, from the cached llama.cpp build."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deployer.adapters.docker_engine import DockerEngine
from deployer.core.errors import LlamaBuildMissing
from deployer.core.serve.image import (
    ImageFile,
    image_files,
    image_tag,
    parse_ldd,
    render_dockerfile,
    version_from_marker,
)
from deployer.core.serve.llama_flags import PINNED_BUILD

_REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = _REPO_ROOT / "scripts" / "build-llama.sh"
DEFAULT_VERSION = f"{PINNED_BUILD}.0.0"
BUSYBOX_HOST = Path("/bin/busybox")


@dataclass(frozen=True)
class ImageBuildResult:
    """One `deployer image build`: what was built (or found), how big, how long."""

    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    built: bool  # False: the image was already there
    llama_version: str
    llama_prefix: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def default_prefix(version: str = DEFAULT_VERSION) -> Path:
    """Where scripts/build-llama.sh caches this version's build."""
    cache = os.environ.get("DEPLOYER_LLAMA_CACHE") or str(Path.home() / ".cache" / "deployer-ci")
    return Path(cache) / f"llama-cpp-{version}-cpu"


def llama_prefix() -> Path:
    """DEPLOYER_LLAMA_PREFIX, the cached build, or a fresh build by scripts/build-llama.sh."""
    env = os.environ.get("DEPLOYER_LLAMA_PREFIX")
    prefix = Path(env) if env else default_prefix()
    if (prefix / "bin" / "llama-server").is_file():
        return prefix
    if env or not BUILD_SCRIPT.is_file():
        raise LlamaBuildMissing(str(prefix))
    # stderr passes through: the build takes minutes and says what it does.
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), DEFAULT_VERSION], check=False, stdout=subprocess.PIPE, text=True
    )
    built = Path(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else prefix
    if out.returncode != 0 or not (built / "bin" / "llama-server").is_file():
        raise LlamaBuildMissing(str(prefix))
    return built


def llama_version(prefix: Path) -> str:
    """The llama.cpp version of a build prefix (its marker, else its folder name)."""
    marker = prefix / ".complete"
    if marker.is_file() and (v := version_from_marker(marker.read_text())):
        return v
    name = prefix.name.removeprefix("llama-cpp-").removesuffix("-cpu")
    return name or DEFAULT_VERSION


def collect_files(prefix: Path) -> list[ImageFile]:
    """Everything the image holds, from `ldd` of the built llama-server."""
    binary = prefix / "bin" / "llama-server"
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True)
    if not BUSYBOX_HOST.is_file():
        raise LlamaBuildMissing(f"{BUSYBOX_HOST} (install busybox-static)")
    return image_files(
        binary=str(binary),
        prefix=str(prefix),
        libs=parse_ldd(out.stdout),
        busybox=str(BUSYBOX_HOST),
    )


def write_context(context: Path, files: list[ImageFile], dockerfile: str) -> None:
    """The build context: Dockerfile and rootfs/, file contents copied from resolved links."""
    rootfs = context / "rootfs"
    (rootfs / "tmp").mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    for f in files:
        dest = rootfs / f.dest.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.link_to is not None:
            dest.symlink_to(f.link_to)
            continue
        if f.source is not None:
            shutil.copyfile(os.path.realpath(f.source), dest)
        else:
            dest.write_text(f.text or "", encoding="utf-8")
        dest.chmod(f.mode)
    (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")


def build_runtime_image(
    *, engine: DockerEngine, force: bool = False, variant: str = "cpu"
) -> ImageBuildResult:
    """Build `deployer/llama-server:<version>-cpu` unless it exists (or `force`)."""
    engine.engine_available()
    prefix = llama_prefix()
    version = llama_version(prefix)
    tag = image_tag(version, variant)
    started = time.monotonic()
    existing = None if force else engine.image_info(tag=tag)
    if existing is not None:
        return ImageBuildResult(
            tag, existing.id, existing.size_bytes, 0.0, False, version, str(prefix)
        )
    files = collect_files(prefix)
    dockerfile = render_dockerfile(llama_version=version, variant=variant, files=files)
    with tempfile.TemporaryDirectory(prefix="deployer-image-") as tmp:
        write_context(Path(tmp), files, dockerfile)
        info = engine.build_image(context_dir=Path(tmp), tag=tag)
    seconds = round(time.monotonic() - started, 2)
    return ImageBuildResult(tag, info.id, info.size_bytes, seconds, True, version, str(prefix))
