"""Shared fixtures: every test gets its own config, state and Hugging Face dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from deployer.cli.wiring import install_data_source

# Core reads profiles, the catalog and templates through the installed DataSource: the real
# files, as the CLI installs them at start (the dirs it reads are under tmp_path, below).
install_data_source()

# Property tests (hostile input) are bounded so CI stays within its time: a fixed number of
# examples, no per-example deadline (a 2-core CI machine is slow and noisy), derandomized so a
# failure reproduces. HYPOTHESIS_PROFILE=deep runs many more examples locally.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", default=False, help="rewrite golden files"
    )


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DEPLOYER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DEPLOYER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("DEPLOYER_DEBUG", raising=False)
    yield


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
