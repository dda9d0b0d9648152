"""Golden files for the four fleet playbooks, one per rendered variant, read back by Ansible."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.core.fleet.hosts import PLAYBOOKS, render_playbook

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ansible"

# variant -> (playbook, render options); every [% if %] of templates/ansible/ both ways.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "facts": ("facts", {}),
    "preflight": ("preflight", {}),
    "status": ("status", {}),
    "deploy": ("deploy", {}),
    # A rolling update that stops at the first failure: 0 is printed, not taken for "unset".
    "deploy-rolling": ("deploy", {"serial": "50%", "max_fail_percentage": 0}),
    "down": ("down", {}),
    "down-purge": ("down", {"purge": True}),
}


def test_every_playbook_has_a_variant() -> None:
    assert {kind for kind, _ in VARIANTS.values()} == set(PLAYBOOKS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_playbook_golden(variant: str, update_golden: bool) -> None:
    kind, ctx = VARIANTS[variant]
    text = render_playbook(kind, **ctx)
    path = GOLDEN / f"{variant}.yml"
    if update_golden:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run pytest --update-golden"
    assert text == path.read_text(encoding="utf-8"), f"{variant} changed: run --update-golden"
    play = yaml.safe_load(text)[0]
    assert play["hosts"] == "all" and play["tasks"]
    assert ("serial" in play) == ("serial" in ctx)
    assert ("max_fail_percentage" in play) == ("max_fail_percentage" in ctx)


def test_goldens_are_only_the_variants() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yml")) == sorted(VARIANTS)


@pytest.mark.skipif(
    shutil.which("ansible-playbook") is None, reason="ansible-core is not installed"
)
def test_ansible_accepts_every_variant(tmp_path: Path) -> None:
    paths = []
    for variant, (kind, ctx) in sorted(VARIANTS.items()):
        path = tmp_path / f"{variant}.yml"
        path.write_text(render_playbook(kind, **ctx), encoding="utf-8")
        paths.append(str(path))
    proc = subprocess.run(
        ["ansible-playbook", "--syntax-check", "-i", "localhost,", *paths],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_value_printed_without_a_filter_is_refused() -> None:
    # max_fail_percentage is printed bare: only an int may reach it.
    with pytest.raises(ValueError, match="without a quoting filter"):
        render_playbook("deploy", max_fail_percentage="0\n- hosts: all")
