"""hf:// references and revisions from the user: a checked HubRef or one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.clock import SystemClock
from deployer.adapters.local_files import LocalDisk, contained
from deployer.core.model.ref import HubRef, parse_hf_ref
from deployer.core.pull.files import pull_model
from deployer.core.pull.hub_checks import check_revision
from deployer.core.untrusted import UntrustedValue

# Text near the grammar, so most examples reach the repo, quant and revision checks.
NEAR = st.text(alphabet="ab9_/.-:@ {}%#\n\r\x1b\\", max_size=24)


def _one_line(exc: UntrustedValue) -> str:
    message = exc.message()
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    return message


@given(st.one_of(st.text(max_size=40), NEAR))
def test_any_text_is_a_checked_ref_or_one_line(body: str) -> None:
    try:
        ref = parse_hf_ref("hf://" + body)
    except UntrustedValue as exc:
        _one_line(exc)
        return
    validate_repo_id(ref.repo_id)  # what huggingface_hub will be given, it accepts
    assert ref.repo_id.count("/") == 1
    if ref.revision is not None:
        root = Path("/cache/models--a--b/refs")
        assert contained(root, ref.revision).is_relative_to(root)
        assert ".." not in ref.revision.split("/")
    for part in (ref.repo_id, ref.revision or "", ref.quant or ""):
        assert part.isascii() and part.isprintable() and "{" not in part


@given(st.text(alphabet="abAB09_.-/", min_size=1, max_size=30))
def test_repo_ids_huggingface_hub_refuses_are_refused(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
        hub_ok = repo_id.count("/") == 1
    except HFValidationError:
        hub_ok = False
    if not hub_ok:
        with pytest.raises(UntrustedValue):
            parse_hf_ref(f"hf://{repo_id}")


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("hf://org/repo", HubRef("org/repo", None, None)),
        ("hf://org/repo:Q4_K_M", HubRef("org/repo", None, "Q4_K_M")),
        ("hf://org/repo:UD-Q4_K_XL@v1.0", HubRef("org/repo", "v1.0", "UD-Q4_K_XL")),
        ("hf://org/repo@refs/pr/1:Q8_0", HubRef("org/repo", "refs/pr/1", "Q8_0")),
        ("hf://org/repo@" + "a" * 40, HubRef("org/repo", "a" * 40, None)),
    ],
)
def test_valid_refs(ref: str, want: HubRef) -> None:
    assert parse_hf_ref(ref) == want


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("hf://../..", "repo id '../..'"),
        ("hf://a/b\nc", "control character"),
        ("hf://org", "is not ORG/REPO"),
        ("hf://org/repo/extra", "is not ORG/REPO"),
        ("hf://org/re--po", "'--'"),
        ("hf://org/repo.git", "'.git'"),
        ("hf://org/repo@main@dev", "two revisions"),
        ("hf://org/repo:Q4:Q8", "two quants"),
        ("hf://org/repo:", "empty quant"),
        ("hf://org/repo@../../victim", "revision '../../victim'"),
        ("hf://org/repo:Q4_K_M@refs/../../victim", "revision"),
        ("hf://org/repo:m{{ x }}", "template syntax"),
    ],
)
def test_invalid_refs_are_one_line(ref: str, says: str) -> None:
    with pytest.raises(UntrustedValue) as info:
        parse_hf_ref(ref)
    assert says in _one_line(info.value)
    assert info.value.hint and info.value.message().endswith(info.value.hint)  # the next step


@pytest.mark.parametrize(
    "rev",
    ["../x", "/tmp", "a//b", "a/", ".hidden", "a/.b", "x.lock", "v1.", "a b", "a\nb", "{{x}}", ""],
)
def test_revision_option_is_refused_before_the_hub(rev: str) -> None:
    with pytest.raises(UntrustedValue) as info:
        pull_model(
            "hf://org/repo", revision=rev, files=LocalDisk(), clock=SystemClock()
        )  # no store given: refused before any I/O
    assert "revision" in _one_line(info.value)


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/12", "release-2025_01", "0" * 40])
def test_real_revisions_pass(rev: str) -> None:
    assert check_revision(rev) == rev
