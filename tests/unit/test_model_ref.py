"""A model reference is classified once: hf://, a .gguf path, demo, else the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.core.model.ref import (
    CatalogRef,
    DemoRef,
    HubRef,
    LocalRef,
    parse_model_ref,
    split_parts,
)
from deployer.core.untrusted import UntrustedValue


def test_each_kind() -> None:
    assert parse_model_ref("demo") == DemoRef()
    assert parse_model_ref("~/m/Model.GGUF") == LocalRef("~/m/Model.GGUF")
    assert parse_model_ref("hf://org/x.gguf") == HubRef("org/x.gguf", None, None)
    assert parse_model_ref("hf://org/repo:Q8_0").text == "hf://org/repo:Q8_0"
    assert parse_model_ref("qwen2.5-7b-instruct") == CatalogRef("qwen2.5-7b-instruct")


def test_a_bad_hub_ref_is_one_line() -> None:
    with pytest.raises(UntrustedValue):
        parse_model_ref("hf://org/repo::Q4")


def test_split_parts() -> None:
    first = Path("/m/big-Q4_K_M-00001-of-00003.gguf")
    assert [p.name for p in split_parts(first)] == [
        f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    assert split_parts(Path("/m/one.gguf")) == [Path("/m/one.gguf")]
