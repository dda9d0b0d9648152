"""The shared checks for values from outside: exact forms pass, anything else is one line."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.untrusted import (
    UntrustedValue,
    check_commit,
    check_line,
    check_sha256,
)


def test_sha256_exact_form() -> None:
    good = "a" * 64
    assert check_sha256(good, "Hub") == good
    for bad in ["A" * 64, "a" * 63, "../../../../tmp/victim/important.txt", "/etc/passwd", 5]:
        with pytest.raises(UntrustedValue):
            check_sha256(bad, "Hub")


def test_commit_exact_form() -> None:
    assert check_commit("0" * 40, "Hub") == "0" * 40
    with pytest.raises(UntrustedValue):
        check_commit("../main", "Hub")


@given(st.text())
def test_line_is_accepted_only_without_controls_or_templates(text: str) -> None:
    try:
        assert check_line(text, "inventory", "name") == text
    except UntrustedValue as exc:
        msg = exc.message()
        assert "\n" not in msg and "\r" not in msg
        assert msg.startswith("inventory: name ")
    else:
        assert not any(c in text for c in "\n\r\x00")
        assert "{{" not in text and "{%" not in text


def test_template_syntax_is_refused() -> None:
    with pytest.raises(UntrustedValue, match="template syntax"):
        check_line("m{{ lookup('pipe','id') }}-Q4_K_M.gguf", "Hub listing", "file name")


@pytest.mark.parametrize(
    "check", [lambda v: check_sha256(v, "Hub"), lambda v: check_commit(v, "Hub")]
)
@pytest.mark.parametrize("value", ["a" * 64 + "\n", "b" * 40 + "\n", "\n" + "a" * 64])
def test_a_trailing_or_leading_newline_is_never_the_exact_form(check: Any, value: str) -> None:
    with pytest.raises(UntrustedValue):
        check(value)


@pytest.mark.parametrize("name", ["evil\u202eFUGG.gguf", "a\u200bb", "\ufeffname"])
def test_invisible_formatting_characters_are_refused(name: str) -> None:
    with pytest.raises(UntrustedValue, match="invisible"):
        check_line(name, "Hub listing", "file name")


@pytest.mark.parametrize("name", ["demo\n", "demo\r\n", "x" * 40 + "\n"])
def test_a_deployment_name_with_a_trailing_newline_is_refused(name: str) -> None:
    from deployer.core.errors import InvalidRequest
    from deployer.core.state.records import check_name

    with pytest.raises(InvalidRequest):
        check_name(name)


@pytest.mark.parametrize("name", ["My-Model", "demo.v2", "demo_1", "-demo", "demo-", "d" * 53])
def test_one_deployment_name_rule_for_records_render_and_fleet(name: str) -> None:
    from deployer.core.errors import InvalidRequest
    from deployer.core.fleet.inventory import NAME_RE as FLEET_NAME_RE
    from deployer.core.state.record_fields import NAME_RE as RECORD_NAME_RE
    from deployer.core.state.records import check_name
    from deployer.core.untrusted import DEPLOYMENT_NAME_RE

    assert FLEET_NAME_RE is RECORD_NAME_RE is DEPLOYMENT_NAME_RE
    with pytest.raises(InvalidRequest, match="lowercase letters, digits and '-'"):
        check_name(name)
    assert check_name("d" * 52) == "d" * 52


def test_a_state_file_path_with_escapes_is_shown_escaped_with_a_safe_removal_hint() -> None:
    from deployer.core.errors import StateFileInvalid

    text = StateFileInvalid("/s/deployments/\x1b[2Jx.json", "not JSON").message()
    assert "\x1b" not in text and "\\x1b[2Jx.json" in text
    assert "file manager" in text
