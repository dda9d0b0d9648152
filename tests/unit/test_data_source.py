"""Core reads profiles, the catalog and templates through the DataSource seam only."""

from __future__ import annotations

from pathlib import Path

import pytest

import deployer.core.data_source as data_source_mod
import deployer.core.serve.render as render_mod
from deployer.adapters.data_files import data_dir
from deployer.core.errors import InvalidDataFile
from deployer.core.hardware.profiles import load_profiles
from deployer.core.model.catalog import load_catalog
from tests.unit.in_memory import MemoryDataSource


def _shipped(kind: str, stem: str) -> str:
    return (Path(str(data_dir(kind))) / f"{stem}.yaml").read_text(encoding="utf-8")


def test_profiles_come_from_the_source_handed_in_the_later_text_winning() -> None:
    text = _shipped("profiles", "cpu-x86-2c-8gb")
    user = text.replace("cpu_cores: 2", "cpu_cores: 3")
    assert user != text
    source = MemoryDataSource(
        files={"profiles": [("shipped/cpu-x86-2c-8gb.yaml", text), ("u/cpu-x86-2c-8gb.yml", user)]}
    )
    profiles = load_profiles(source)
    assert list(profiles) == ["cpu-x86-2c-8gb"]
    assert profiles["cpu-x86-2c-8gb"].cpu_cores == 3


def test_an_id_that_is_not_the_file_name_names_the_source() -> None:
    text = _shipped("catalog", "qwen2.5-0.5b-instruct")
    source = MemoryDataSource(files={"catalog": [("user/models/other.yaml", text)]})
    with pytest.raises(InvalidDataFile) as err:
        load_catalog(source)
    assert err.value.path == "user/models/other.yaml"
    assert err.value.line == 1


def test_templates_are_read_through_the_installed_source(monkeypatch: pytest.MonkeyPatch) -> None:
    source = MemoryDataSource(templates={"t/x.j2": "n={{ n }}\n"})
    monkeypatch.setattr(data_source_mod, "_installed", source)
    monkeypatch.setattr(render_mod, "_ENV", None)
    assert render_mod.template_env().get_template("t/x.j2").render(n=3) == "n=3\n"
    monkeypatch.setattr(render_mod, "_ENV", None)


def test_core_without_an_installed_source_says_what_to_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data_source_mod, "_installed", None)
    with pytest.raises(RuntimeError, match="install_data_source"):
        load_profiles()
