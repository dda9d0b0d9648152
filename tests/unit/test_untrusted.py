"""The shared checks for values from outside: exact forms pass, anything else is one line."""

from __future__ import annotations

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
