"""Bad input: one line naming the problem and what to try, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from deployer.cli.app import app
from deployer.core.errors import EngineUnavailable
from deployer.core.untrusted import TEMPLATE_RE
from tests.unit.hostile_yaml import BILLION_LAUGHS, DEEP, damaging_value, mutated


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


@pytest.mark.parametrize(
    ("args", "problem", "help_of"),
    [
        (["plan", "demo", "--ctx", "abc"], "Invalid value for '--ctx'", "deployer plan"),
        (["deploy", "--bogus"], "No such option: --bogus", "deployer deploy"),
        (["profiles", "show"], "Missing argument 'profile_id'", "deployer profiles show"),
        (["fleet", "deploy"], "Missing option '--inventory'", "deployer fleet deploy"),
        (["deplyo"], "No such command 'deplyo'", "deployer"),
        (["--bogus"], "No such option: --bogus", "deployer"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_problem_and_the_help(
    args: list[str], problem: str, help_of: str
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {problem}"), result.output
    assert result.output.rstrip().endswith(f"Try '{help_of} --help'."), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("args", [["plan", "--help"], ["profiles", "show", "--help"]])
def test_help_still_prints_the_usage(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and result.output.startswith("Usage: deployer "), result.output


def test_a_group_without_a_command_still_prints_its_help() -> None:
    result = CliRunner().invoke(app, ["profiles"])
    assert result.exit_code == 2 and "Commands:" in result.output and "error:" not in result.output


# ---- hostile data through the CLI: one error line or literal output, never a traceback --------

runner = CliRunner()
PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
SHIPPED_PROFILES = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
WIDE = {"COLUMNS": "250"}  # no wrapping: a value must be findable as one string
# Each example here runs whole commands (about 0.3 s each); the loader's own property tests in
# test_profiles.py / test_catalog.py take the full number of examples.
THROUGH_CLI = settings(max_examples=max(6, settings().max_examples // 6))


def _cli(args: list[str]) -> Result:
    """Run the CLI in-process; assert the error contract whatever the outcome."""
    result = runner.invoke(app, args, env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        result.exception,
    )
    assert "Traceback" not in result.output and "\x1b" not in result.output
    err = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if result.exit_code != 0 and err:
        assert len(err) == 1 and err[0].startswith("error: "), result.stderr
        assert err[0].isprintable()
    return result


def _write(folder: str, stem: str, text: str) -> None:
    """The only user data file in `folder`: hypothesis runs every example in one test's dirs,
    so the previous example's file and the list memo go first."""
    from deployer.adapters.data_files import config_dir
    from deployer.adapters.filememo import cache_dir

    shutil.rmtree(cache_dir() / "memo", ignore_errors=True)
    shutil.rmtree(config_dir() / folder, ignore_errors=True)
    path = config_dir() / folder / f"{stem}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")


def _edited(old: str, new: str) -> tuple[str, str]:
    """cpu-x86-8c-32gb with one line edited."""
    text = (PROFILES_DIR / "cpu-x86-8c-32gb.yaml").read_text(encoding="utf-8")
    assert old in text
    return "cpu-x86-8c-32gb", text.replace(old, new, 1)


@THROUGH_CLI
@given(
    mutated(
        "profiles",
        SHIPPED_PROFILES,
        values=damaging_value,
        keep=("id",),
        hows=("value",),
        most=1,
        leaves=True,
    )
)
# Regressions: a MarkupError traceback (name), an OverflowError traceback (RAM), vanished text.
@example(_edited("name: x86", "name: '[/x] x86"))
@example(_edited("host_ram_gib: 32", "host_ram_gib: .inf"))
@example(_edited("source: ", "source: '[red]red[/red]' "))
def test_hostile_profiles_through_the_cli(case: tuple[str, str]) -> None:
    stem, text = case
    _write("profiles", stem, text)
    listed = _cli(["profiles", "list"])
    shown_ = _cli(["profiles", "show", stem])
    planned = _cli(["plan", "demo", "--profile", stem])
    as_json = _cli(["plan", "demo", "--profile", stem, "--json"])
    # Either the file is refused everywhere, in the same one line, or used everywhere.
    if listed.exit_code != 0:
        assert shown_.exit_code == planned.exit_code == listed.exit_code == 1
        assert shown_.stderr == planned.stderr == listed.stderr
    else:
        assert shown_.exit_code == 0 and planned.exit_code in (0, 1)
        _finite_plan(as_json)
        data = yaml.safe_load(text)
        for value in (data["name"], data.get("notes", ""), data["source"]):
            assert _flat(value) in _flat(shown_.stdout), value  # nothing vanished


def _flat(text: str) -> str:
    """Text without whitespace and box drawing: a table cell wrapped over lines reads whole."""
    return "".join(c for c in text if not c.isspace() and not "\u2500" <= c <= "\u257f")


def _finite_plan(result: Result) -> None:
    """A plan that was made holds finite numbers only (no inf tokens/s, no NaN cost)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"plan --json holds {constant}")

    assert result.exit_code in (0, 1), result.output
    json.loads(result.stdout, parse_constant=refuse)


@THROUGH_CLI
@given(
    mutated(
        "catalog",
        ["gemma-3-270m-it", "qwen3-0.6b", "gpt-oss-20b"],
        values=damaging_value,
        keep=("id",),
        hows=("value",),
        most=1,
        leaves=True,
    )
)
def test_hostile_catalog_entries_through_the_cli(case: tuple[str, str]) -> None:
    stem, text = case
    _write("models", stem, text)
    shown_ = _cli(["models", "show", stem])
    planned = _cli(["plan", stem, "--profile", "cpu-x86-16c-64gb"])
    if shown_.exit_code != 0:
        assert planned.exit_code == 1 and planned.stderr == shown_.stderr
    else:
        assert planned.exit_code in (0, 1)
        _finite_plan(_cli(["plan", stem, "--profile", "cpu-x86-16c-64gb", "--json"]))


# Text a user may legitimately write (it passes validation), rich markup and emoji codes
# included: it must come out exactly as written.
_LITERAL = (
    st.text(
        alphabet=st.sampled_from("[]/\\:=#@ ab") | st.characters(categories=("L", "N", "P", "S")),
        min_size=1,
        max_size=24,
    )
    .map(str.strip)
    .filter(lambda s: s != "" and not TEMPLATE_RE.search(s))
)
_MARKUP = st.sampled_from(["[/x]", "[red]x[/red]", "[bold]", "\\[/x]", "x\\", ":smile:", "[link]"])


@THROUGH_CLI
@given(name=_LITERAL | _MARKUP, notes=_LITERAL | _MARKUP)
def test_profile_text_is_printed_literally(name: str, notes: str) -> None:
    text = (PROFILES_DIR / "cpu-x86-8c-32gb.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data.update(name=name, notes=notes)
    _write("profiles", "cpu-x86-8c-32gb", yaml.safe_dump(data, allow_unicode=True, width=10**6))
    shown_ = _cli(["profiles", "show", "cpu-x86-8c-32gb"])
    planned = _cli(["plan", "demo", "--profile", "cpu-x86-8c-32gb"])
    assert shown_.exit_code == planned.exit_code == 0, planned.output
    assert name in shown_.stdout and notes in shown_.stdout
    assert f"({name}): fits" in planned.stdout


class _NoEngine:
    """The container engine is an edge: ps of native records needs none."""

    def list_deployer_containers(self) -> list[object]:
        raise EngineUnavailable("not in unit tests")


@given(model=_LITERAL | _MARKUP, quant=_LITERAL | _MARKUP)
def test_state_record_fields_are_printed_literally(
    model: str, quant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.state_store import save_record
    from deployer.cli import wiring
    from deployer.core.state.records import DeploymentRecord, iso_seconds

    monkeypatch.setattr(wiring, "docker_engine", _NoEngine)
    save_record(
        DeploymentRecord(
            name="lit", model=model, quant=quant, backend="llamacpp", runtime="native",
            endpoint="http://127.0.0.1:1", port=1, created_at=iso_seconds(SystemClock().utc_now()),
        )
    )  # fmt: skip
    result = _cli(["ps"])
    assert result.exit_code == 0
    assert model in result.stdout and quant in result.stdout


def test_markup_in_a_model_path_is_printed_literally(tmp_path: Path) -> None:
    """`[/x]` in a path gave a MarkupError traceback in plan and deploy --dry-run; `[red]x[/red]`
    vanished from it."""
    from tests.unit.test_gguf_meta import llama_spec, write_gguf

    folder = tmp_path / "[/x] [red]r[/red]"
    folder.mkdir(parents=True)
    gguf = write_gguf(folder / "m.gguf", llama_spec())
    planned = _cli(["plan", str(gguf), "--profile", "cpu-x86-16c-64gb"])
    assert planned.exit_code == 0 and str(gguf) in planned.stdout
    args = ["deploy", str(gguf), "--profile", "cpu-x86-16c-64gb", "--dry-run", "--port", "18555"]
    dry = _cli(args)
    assert dry.exit_code == 0 and "[red]r[/red]" in dry.stdout


def test_controls_in_an_error_stay_in_one_escaped_line() -> None:
    path = "/no/such\ndir\x1b[2J\x1b]0;owned\x07/m.gguf"
    result = _cli(["plan", path, "--profile", "cpu-x86-16c-64gb"])
    assert result.exit_code != 0
    assert "\\n" in result.stderr and "\\x1b[2J" in result.stderr


def test_printed_tables_escape_controls(capsys: pytest.CaptureFixture[str]) -> None:
    from deployer.cli.output import cells, echo, line, print_rows, styled

    print_rows(["ID", "NAME"], [["a\x1b[2Jb", "two\nlines"]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "a\\x1b[2Jb" in out and "two\\nlines" in out
    assert out.count("\n") == 2
    echo(styled("[/x]", "bold"), " [red]r[/red] ", "\u202e\x07")
    assert capsys.readouterr().out == "[/x] [red]r[/red] \\u202e\\x07\n"
    assert [c.plain for c in cells("[/x]", 3)] == ["[/x]", "3"]
    assert line("a", styled("b", "red")).plain == "ab"


def test_a_billion_laughs_profile_is_one_error_line_quickly() -> None:
    text = (PROFILES_DIR / "cpu-x86-8c-32gb.yaml").read_text(encoding="utf-8")
    _write("profiles", "cpu-x86-8c-32gb", text + f"cpu_flags: {BILLION_LAUGHS}\n")
    start = time.monotonic()
    result = _cli(["plan", "demo", "--profile", "cpu-x86-8c-32gb"])
    assert result.exit_code == 1 and "alias bomb" in result.stderr
    assert time.monotonic() - start < 10


def test_a_deeply_nested_profile_does_not_crash_the_process(tmp_path: Path) -> None:
    """Run as users do (a subprocess): a segfault in libyaml would show as a signal exit."""
    prof = tmp_path / "config" / "profiles"
    prof.mkdir(parents=True)
    text = (PROFILES_DIR / "cpu-x86-8c-32gb.yaml").read_text(encoding="utf-8")
    (prof / "cpu-x86-8c-32gb.yaml").write_text(text + f"notes: {DEEP}\n")
    code, err = _run(["profiles", "show", "cpu-x86-8c-32gb"])
    # ours ("nested deeper than N levels"), or PyYAML >= 6.0.4's own scanner limit, which
    # fires first ("exceeded maximum nesting depth"): refused in one line either way
    assert code == 1 and re.search(r"nested deeper than|nesting depth", _one_line_error(err))


def test_logs_escape_controls_a_server_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.native import log_path_for
    from deployer.adapters.state_store import save_record
    from deployer.cli import wiring
    from deployer.core.state.records import DeploymentRecord, iso_seconds

    monkeypatch.setattr(wiring, "docker_engine", _NoEngine)
    log = log_path_for("logged")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("loaded model '\x1b]0;owned\x07\x1b[2J'\nready\n", encoding="utf-8")
    save_record(
        DeploymentRecord(
            name="logged", model="m", quant="Q4_K_M", backend="llamacpp", runtime="native",
            endpoint="http://127.0.0.1:1", port=1, created_at=iso_seconds(SystemClock().utc_now()), log_path=str(log),
        )
    )  # fmt: skip
    result = _cli(["logs", "logged"])
    assert result.exit_code == 0
    assert result.stdout == "loaded model '\\x1b]0;owned\\x07\\x1b[2J'\nready\n"


def test_logs_never_print_a_file_the_record_points_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged record naming another file (/etc/shadow, someone's key) prints nothing of it."""
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.state_store import save_record
    from deployer.cli import wiring
    from deployer.core.state.records import DeploymentRecord, iso_seconds

    monkeypatch.setattr(wiring, "docker_engine", _NoEngine)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    save_record(
        DeploymentRecord(
            name="forged", model="m", quant="Q4_K_M", backend="llamacpp", runtime="native",
            endpoint="http://127.0.0.1:1", port=1, created_at=iso_seconds(SystemClock().utc_now()), log_path=str(secret),
        )
    )  # fmt: skip
    result = _cli(["logs", "forged"])
    assert result.exit_code != 0
    assert "TOP-SECRET" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["render", "deploy"])
@pytest.mark.parametrize("image", ["--privileged", "a b", "x;touch /tmp/p", "img\nEVIL: 1"])
def test_an_image_that_is_not_an_image_reference_is_one_line(
    command: str, image: str, tmp_path: Path
) -> None:
    from tests.unit.test_gguf_meta import llama_spec, write_gguf

    model = write_gguf(tmp_path / "m-Q4_K_M.gguf", llama_spec())
    args = [command, str(model), "--profile", "cpu-x86-16c-64gb", "--image", image]
    args += ["--out", str(tmp_path / "out")] if command == "render" else ["--dry-run"]
    result = _cli(args)
    assert result.exit_code == 2, result.output
    assert "image" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_printed_key_lines_work_with_a_key_path_holding_spaces_and_quotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On macOS the state dir is under 'Application Support': the printed curl and Python
    lines must still read the key when pasted."""
    import subprocess
    from types import SimpleNamespace

    from deployer.adapters.clock import SystemClock
    from deployer.cli.deploy_view import print_deployed
    from deployer.core.serve.proof import SmokeResult
    from deployer.core.state.records import DeploymentRecord, iso_seconds

    key = tmp_path / "Application Support" / "it's" / "api_key"
    key.parent.mkdir(parents=True)
    key.write_text("KEY123")
    rec = DeploymentRecord(
        name="d", model="m", quant="Q4_K_M", backend="llamacpp", runtime="container",
        endpoint="http://127.0.0.1:1", port=1, created_at=iso_seconds(SystemClock().utc_now()), api_key_path=str(key),
    )  # fmt: skip
    smoke = SmokeResult("hi", 1, 0.1, 1.0, 10.0)
    print_deployed(SimpleNamespace(record=rec, smoke=smoke, notes=[], served_model=None),
                   as_json=False)  # fmt: skip
    out = capsys.readouterr().out
    curl = next(line for line in out.splitlines() if line.startswith("curl "))
    # the line as a user pastes it, with curl replaced by a function that prints its arguments
    shell = subprocess.run(
        ["sh", "-c", 'curl() { printf "%s\\n" "$@"; }; ' + curl], capture_output=True, text=True
    )
    assert "Authorization: Bearer KEY123" in shell.stdout.splitlines(), shell.stderr
    py = next(line for line in out.splitlines() if line.startswith("python: "))
    expr = py.split("api_key=", 1)[1].split("); print(", 1)[0]
    assert eval(expr) == "KEY123"  # the printed Python expression reads the key


def test_a_quant_a_local_file_does_not_hold_is_refused(tmp_path: Path) -> None:
    from tests.unit.test_gguf_meta import llama_spec, write_gguf

    model = write_gguf(tmp_path / "m-Q4_K_M.gguf", llama_spec())
    result = _cli(["plan", str(model), "--profile", "cpu-x86-16c-64gb", "--quant", "Q8_0"])
    assert result.exit_code != 0
    assert "Q8_0" in result.output and len(result.output.strip().splitlines()) == 1
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    result = _cli(["plan", str(fifo), "--profile", "cpu-x86-16c-64gb"])
    assert result.exit_code != 0 and "Not a regular file" in result.output
