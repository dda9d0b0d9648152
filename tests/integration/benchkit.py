"""A demo deployment for `deployer bench` tests: deployed through the CLI with 4 slots and an
API key, removed with `deployer down` afterwards (the fixture is in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer.cli.app import app
from tests.integration.loopback import free_port

NAME = "t-bench"
PROFILE = "cpu-x86-2c-8gb"


@dataclass(frozen=True)
class BenchDeployment:
    """The deployment a module's bench tests share."""

    name: str
    state: Path  # its DEPLOYER_STATE_DIR
    port: int
    key_path: Path


def deployed_for_bench(mp: pytest.MonkeyPatch, state: Path) -> Iterator[BenchDeployment]:
    """Deploy the demo (4 slots, 4 x 2048 context, an API key); yield it; take it down."""
    mp.setenv("DEPLOYER_STATE_DIR", str(state))
    port = free_port()
    r = CliRunner().invoke(app, ["deploy", "demo", "--name", NAME, "--port", str(port),
                                 "--parallel", "4", "--ctx", "8192", "--expose",
                                 "--profile", PROFILE, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    try:
        yield BenchDeployment(NAME, state, port, Path(got["api_key_path"]))
    finally:
        CliRunner().invoke(app, ["down", NAME])
