"""Bad input: one line naming the problem and what to try, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app


def _run(args: list[str]) -> tuple[int, str]:
    """Run the real console entry point in a subprocess (exit codes and stderr as users see them)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from deployer.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    return proc.returncode, proc.stderr


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_profile_names_close_matches() -> None:
    code, err = _run(["plan", "demo", "--profile", "nvidia-a10"])
    line = _one_line_error(err)
    assert code == 1
    assert "unknown profile 'nvidia-a10'" in line and "nvidia-a10g-24gb" in line
    assert "deployer profiles list" in line


def test_unknown_model_names_close_matches() -> None:
    code, err = _run(["plan", "lama-3.1-8b-instruct", "--profile", "nvidia-a10g-24gb"])
    line = _one_line_error(err)
    assert code == 1 and "llama-3.1-8b-instruct" in line and "deployer models list" in line


def test_unknown_quant_names_the_available_ones() -> None:
    code, err = _run(["plan", "demo", "--quant", "Q4_K_X", "--profile", "cpu-x86-16c-64gb"])
    line = _one_line_error(err)
    assert code == 1 and "Q4_K_X" in line and "Q4_K_M" in line


def test_context_above_trained_is_refused_with_the_limit() -> None:
    code, err = _run(["plan", "demo", "--profile", "cpu-x86-16c-64gb", "--ctx", "65536"])
    line = _one_line_error(err)
    assert code == 2 and "32768" in line and "--ctx" in line


def test_quantized_v_cache_without_flash_attention_is_refused(tmp_path: Path) -> None:
    prof = tmp_path / "config" / "profiles"
    prof.mkdir(parents=True)
    src = (Path(__file__).resolve().parents[2] / "profiles" / "nvidia-t4-16gb.yaml").read_text()
    (prof / "nvidia-t4-16gb.yaml").write_text(
        src.replace("flash_attention: true", "flash_attention: false")
    )
    code, err = _run(["plan", "demo", "--profile", "nvidia-t4-16gb", "--kv-type", "q4_0"])
    line = _one_line_error(err)
    assert code == 2 and "flash attention" in line


def test_unknown_kv_type_and_backend() -> None:
    code, err = _run(["plan", "demo", "--profile", "cpu-x86-16c-64gb", "--kv-type", "q3"])
    assert code == 2 and "q8_0" in _one_line_error(err)
    code, err = _run(["plan", "demo", "--profile", "cpu-x86-16c-64gb", "--backend", "vllm"])
    assert code == 2 and "llamacpp" in _one_line_error(err)


def test_invalid_user_profile_names_file_and_line(tmp_path: Path) -> None:
    prof = tmp_path / "config" / "profiles"
    prof.mkdir(parents=True)
    (prof / "mybox.yaml").write_text(
        "id: mybox\nname: My box\nkind: cpu\nhost_ram_gib: 64\ncpu_cores: 8\n"
        "cpu_bandwidth_gbps: 50\nram_speed: fast\nruntimes: {}\nsource: me\n"
    )
    code, err = _run(["plan", "demo", "--profile", "mybox"])
    line = _one_line_error(err)
    assert code == 1 and "mybox.yaml:7" in line and "ram_speed" in line and "unknown key" in line


def test_missing_local_gguf_is_named() -> None:
    code, err = _run(["plan", "/nonexistent/model.gguf", "--profile", "cpu-x86-16c-64gb"])
    line = _one_line_error(err)
    assert code != 0 and "/nonexistent/model.gguf" in line


def test_not_a_gguf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    code, err = _run(["plan", str(bad), "--profile", "cpu-x86-16c-64gb"])
    line = _one_line_error(err)
    assert code == 1 and "fake.gguf" in line


def test_debug_shows_the_traceback() -> None:
    env = {**os.environ, "DEPLOYER_DEBUG": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from deployer.cli.app import main; main()",
            "plan",
            "demo",
            "--profile",
            "nope",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("args", [["plan"], ["plan", "demo", "--ctx", "abc"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert CliRunner().invoke(app, args).exit_code == 2
