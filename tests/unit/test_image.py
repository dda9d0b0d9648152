"""The runtime image's contents and Dockerfile, and the container arguments: no engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import deployer.cli.image  # noqa: F401 - registers `image build`
from deployer.cli.app import app
from deployer.core.serve.image import (
    ImageFile,
    MissingLibrary,
    image_files,
    image_for_build,
    image_tag,
    parse_ldd,
    render_dockerfile,
    version_from_marker,
)
from deployer.core.serve.specs import ContainerSpec, HealthCheck, Mount

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "image" / "llamacpp-cpu.Dockerfile"
PREFIX = "/cache/llama-cpp-11434.0.0-cpu"
LDD = f"""\tlinux-vdso.so.1 (0x00007fd9f71d9000)
\tlibllama-server-impl.so => {PREFIX}/bin/../lib/libllama-server-impl.so (0x00007fd9f6e00000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007fd9f6a00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd9f6c1e000)
\tlibllama.so.0 => {PREFIX}/bin/../lib/../lib/libllama.so.0 (0x00007fd9f5e00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fd9f71db000)
\tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x00007fd9f714a000)
"""


def _files() -> list[ImageFile]:
    return image_files(
        binary=f"{PREFIX}/bin/llama-server",
        prefix=PREFIX,
        libs=parse_ldd(LDD),
        busybox="/bin/busybox",
    )


def test_parse_ldd_skips_the_vdso_and_flags_the_loader() -> None:
    libs = parse_ldd(LDD)
    assert [lib.name for lib in libs] == [
        "libllama-server-impl.so",
        "libstdc++.so.6",
        "libc.so.6",
        "libllama.so.0",
        "ld-linux-x86-64.so.2",
        "libgomp.so.1",
    ]
    assert [lib.name for lib in libs if lib.is_loader] == ["ld-linux-x86-64.so.2"]


def test_parse_ldd_refuses_a_missing_library() -> None:
    with pytest.raises(MissingLibrary, match=r"libfoo\.so\.1"):
        parse_ldd(LDD + "\tlibfoo.so.1 => not found\n")


def test_image_files_keep_sonames_and_the_loader_path() -> None:
    dest = {f.dest: f for f in _files()}
    assert dest["/usr/local/bin/llama-server"].source == f"{PREFIX}/bin/llama-server"
    # llama.cpp's own libraries sit where its RUNPATH ($ORIGIN/../lib) finds them, by soname.
    assert "/usr/local/lib/libllama.so.0" in dest
    assert "/usr/local/lib/libllama-server-impl.so" in dest
    assert "/lib/x86_64-linux-gnu/libstdc++.so.6" in dest
    assert dest["/lib64/ld-linux-x86-64.so.2"].mode == 0o755
    assert dest["/bin/wget"].link_to == "busybox"
    assert dest["/etc/passwd"].text is not None and ":65534:65534:" in dest["/etc/passwd"].text
    assert not any("vdso" in d for d in dest)


def test_tags() -> None:
    assert image_tag("11434.0.0") == "deployer/llama-server:11434.0.0-cpu"
    assert image_for_build(11434) == image_tag("11434.0.0")
    assert version_from_marker("version=11434.0.0 seconds=373 jobs=2") == "11434.0.0"
    assert version_from_marker("garbage") is None


def test_dockerfile_golden(update_golden: bool) -> None:
    text = render_dockerfile(llama_version="11434.0.0", variant="cpu", files=_files())
    if update_golden or not GOLDEN.exists():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert "FROM scratch" in text and "USER 65534:65534" in text and "EXPOSE 8080" in text
    assert 'CMD ["wget", "-q", "-O-", "http://127.0.0.1:8080/health"]' in text
    assert 'ENTRYPOINT ["/usr/local/bin/llama-server"]' in text


def test_cuda_build_is_refused_with_reasons() -> None:
    result = CliRunner().invoke(app, ["image", "build", "--backend", "llamacpp", "--cuda"])
    assert result.exit_code == 3
    assert "cannot build a CUDA image here" in result.output


def test_unknown_backend_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["image", "build", "--backend", "ollama"])
    assert result.exit_code == 2 and "Ollama ships its own image" in result.output


def test_container_arguments_carry_every_default() -> None:
    pytest.importorskip("docker")
    from deployer.adapters.docker_engine import DockerEngine

    spec = ContainerSpec(
        name="x",
        image="img",
        command=["-m", "/models/m.gguf"],
        labels={"io.deployer.name": "x"},
        mounts=[Mount("/host/m.gguf", "/models/m.gguf"), Mount("deployer-x-data", "/data", False)],
        gpus=["0", "2"],
        health=HealthCheck(test=["CMD", "wget"], interval_s=2, timeout_s=1.5, start_period_s=60),
    )
    kw = DockerEngine()._create_kwargs(spec)
    assert kw["ports"] == {"8080/tcp": ("127.0.0.1", 8080)}
    assert kw["user"] == "65534:65534" and kw["read_only"] is True and kw["init"] is True
    assert kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges"]
    assert kw["restart_policy"] == {"Name": "unless-stopped"}
    assert kw["tmpfs"] == {"/tmp": "rw,size=64m"}
    bind, vol = kw["mounts"]
    assert (bind["Type"], bind["ReadOnly"]) == ("bind", True)
    assert (vol["Type"], vol["ReadOnly"]) == ("volume", False)
    [req] = kw["device_requests"]
    assert req["DeviceIDs"] == ["0", "2"] and req["Capabilities"] == [["gpu"]]
    assert kw["healthcheck"] == {
        "test": ["CMD", "wget"],
        "interval": 2_000_000_000,
        "timeout": 1_500_000_000,
        "retries": 3,
        "start_period": 60_000_000_000,
    }
    no_gpu = DockerEngine()._create_kwargs(ContainerSpec(name="y", image="i", command=[]))
    assert "device_requests" not in no_gpu and "healthcheck" not in no_gpu
