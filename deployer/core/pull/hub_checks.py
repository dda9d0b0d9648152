"""Checks for the names and numbers that identify things on the Hub: repo ids, revisions,
quant labels, file paths in a repo, sizes and blob ids.

Each returns the value when it has its exact form and raises UntrustedValue (one line: where
the value came from, what is wrong, what to do) otherwise. The user's references are checked
in deployer.core.model.resolve.parse_hf_ref; a Hub listing's values where the adapter reads it
(deployer.adapters.hub.listed_files); core and the download code may rely on both.
"""

from __future__ import annotations

import re

from deployer.core.untrusted import UntrustedValue, check_line

# huggingface_hub's validate_repo_id, ASCII only, with the namespace required, narrowed to what
# a fleet host's folder name may start with: each part 1-96 of [A-Za-z0-9_.-], starting with a
# letter or digit and ending with a letter, digit or '_', no '--' or '..', no trailing '.git'.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
# A branch, tag or commit: git's ref-name rules (check-ref-format) narrowed to a safe alphabet.
# Components are separated by '/', start with a letter or digit, and never are '.' or '..'.
_REV_PART = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
REVISION_RE = re.compile(rf"^{_REV_PART}(?:/{_REV_PART})*$")
REVISION_MAX_CHARS = 255
QUANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
BLOB_ID_RE = re.compile(r"^[0-9a-f]{40}$")
# The Hub refuses single files over 50 GB (its documented repository limit); 1 TiB is far above
# any real file yet keeps every size, and any sum of split parts, an exact small integer.
MAX_FILE_BYTES = 1 << 40
NAME_MAX_CHARS = 1024
SEGMENT_MAX_CHARS = 255  # a file or folder name on every filesystem deployer writes to

REF_HINT = "Write hf://ORG/REPO[:QUANT][@REVISION], e.g. hf://unsloth/Qwen3-8B-GGUF:Q4_K_M"
HUB_HINT = (
    "deployer uses nothing from a listing it cannot trust: check that HF_ENDPOINT points at "
    "a real Hub, or report the file to the repo's owner"
)


def _line(value: object, source: str, what: str, max_len: int, hint: str) -> str:
    """check_line, with the next step added to its error."""
    try:
        return check_line(value, source, what, max_len=max_len)
    except UntrustedValue as exc:
        exc.hint = exc.hint or hint
        raise


def listing_source(repo_id: str) -> str:
    """How a Hub listing is named in errors."""
    return f"Hub listing of {repo_id}"


def check_repo_id(value: object, source: str = "model reference") -> str:
    """ORG/REPO as the Hub allows it, or UntrustedValue."""
    text = _line(value, source, "repo id", 200, REF_HINT)
    problem = ""
    if not REPO_ID_RE.fullmatch(text):
        problem = (
            "is not ORG/REPO (letters, digits, '-', '_', '.'; each part starting with a letter "
            "or digit and ending with a letter, digit or '_', at most 96 characters)"
        )
    elif "--" in text or ".." in text:
        problem = "contains '--' or '..'"
    elif text.endswith(".git"):
        problem = "ends with '.git'"
    if problem:
        raise UntrustedValue(source, "repo id", text, problem, REF_HINT)
    return text


def check_revision(value: object, source: str = "revision") -> str:
    """A branch, tag or commit name that is safe as a path (refs/<revision>) and in a URL."""
    text = _line(value, source, "revision", REVISION_MAX_CHARS, "Pass a branch, tag or commit.")
    problem = ""
    if not REVISION_RE.fullmatch(text):
        problem = (
            "is not a branch, tag or commit name (letters, digits, '.', '_', '+', '-', parts "
            "separated by '/', each starting with a letter or digit)"
        )
    elif ".." in text or any(part.endswith((".", ".lock")) for part in text.split("/")):
        problem = "contains '..' or a part ending in '.' or '.lock'"
    if problem:
        raise UntrustedValue(source, "revision", text, problem, "Pass a branch, tag or commit.")
    return text


def check_quant(value: object, source: str = "quant") -> str:
    """A quant label such as Q4_K_M or UD-Q4_K_XL."""
    text = _line(value, source, "quant", 64, "Pass a label such as Q4_K_M.")
    if not QUANT_RE.fullmatch(text):
        raise UntrustedValue(
            source,
            "quant",
            text,
            "is not a quant label (letters, digits, '_', '.', '+', '-')",
            "Pass a label such as Q4_K_M.",
        )
    return text


def repo_path_problem(name: str) -> str:
    """What makes `name` unusable as a file's path inside a repo (it could leave the snapshot
    or target folder, or break a line or a template), or "" when it is a safe relative path.

    The one rule for Hub file names: the listing, the download, the pull targets and a fleet
    host's weights all use it."""
    if not name:
        return "is empty"
    try:
        check_line(name, "", "", max_len=NAME_MAX_CHARS)  # controls, bidi, templates, length
    except UntrustedValue as exc:
        return exc.problem
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has '..', '.' or empty path segments"
    if any(len(part) > SEGMENT_MAX_CHARS for part in parts):
        return f"has a path segment longer than {SEGMENT_MAX_CHARS} characters"
    return ""


def check_repo_path(repo_id: str, value: object) -> str:
    """A file's path inside a repo: relative, '/'-separated, one line, no template syntax."""
    source = listing_source(repo_id)
    name = _line(value, source, "file name", NAME_MAX_CHARS, HUB_HINT)
    problem = repo_path_problem(name)
    if problem:
        raise UntrustedValue(source, "file name", name, problem, HUB_HINT)
    return name


def check_size(value: object, source: str, what: str) -> int:
    """A byte count: an int (not a bool or text) from 0 to MAX_FILE_BYTES."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UntrustedValue(source, what, str(value), "is not a whole number of bytes", HUB_HINT)
    if not 0 <= value <= MAX_FILE_BYTES:
        raise UntrustedValue(
            source, what, str(value), f"is outside 0..{MAX_FILE_BYTES} bytes (1 TiB)", HUB_HINT
        )
    return value


def check_blob_id(value: object, source: str, what: str) -> str:
    """A git blob id: 40 lowercase hex digits."""
    if not isinstance(value, str) or not BLOB_ID_RE.fullmatch(value):
        raise UntrustedValue(source, what, str(value), "is not a 40-hex git blob id", HUB_HINT)
    return value
