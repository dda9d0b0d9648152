"""Each syntax's quoting reads back, through that syntax's own reader, as exactly the value."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.data_files import data_dir
from deployer.core.serve import render as render_mod
from deployer.core.serve.quoting import (
    comment,
    md,
    md_code,
    mf_block,
    mf_value,
    sd_path,
    sd_text,
    sd_word,
    sh,
    xml_text,
    yaml_dollar,
    yaml_str,
)
from deployer.core.serve.rendered import undollar
from deployer.core.untrusted import CONTROL_RE, UntrustedValue
from tests.unit.syntax_readers import (
    inline_kinds,
    inline_text,
    markdown_tokens,
    modelfile_commands,
    systemd_exec_argv,
    systemd_settings,
    systemd_specifiers,
    systemd_words,
)

# Pieces that break one syntax or another, joined at random with plain text.
NASTY = [
    "\n", "\r", "\t", "\x00", "\x1b", "\x85", "\u2028", "\u2029", '"', "'", "`", "\\", "$",
    "$$", "${HOME}", "$(id)", "%", "%n", "%%", "{{ x }}", "{%", "#", "# ", ": ", "- ", "--",
    "]]>", "<!--", "-->", "&", "&amp;", "<", ">", '"""', ";", "|", "*", "_", "[a](b)", "!",
    "~", " ", "  ", "é", "\u00a0", "\U0001f600", "\ufeff", "a", "/srv/m", ".gguf", "=",
    "[Service]", "ExecStartPre=/bin/touch /tmp/x", "SYSTEM evil",
]  # fmt: skip
hostile = st.lists(st.sampled_from(NASTY) | st.text(max_size=3), max_size=8).map("".join)


def one_line_refusal(exc: UntrustedValue) -> None:
    msg = exc.message()
    assert "\n" not in msg and "\r" not in msg


@given(st.text())
def test_yaml_scalar_reads_back_exactly(text: str) -> None:
    assert yaml.safe_load(f"k: {yaml_str(text)}\nother: 1\n") == {"k": text, "other": 1}


@given(hostile)
def test_compose_and_k8s_args_read_back_after_interpolation(text: str) -> None:
    assert undollar(yaml.safe_load(yaml_dollar(text))) == text
    assert "$" not in yaml_dollar(text).replace("$$", "")


@given(hostile)
def test_systemd_exec_word_reads_back(text: str) -> None:
    try:
        line = f"ExecStart=/bin/x {sd_word(text)} last\n"
    except UntrustedValue as exc:
        one_line_refusal(exc)
        assert CONTROL_RE.search(text)
        return
    ((_, key, value),) = systemd_settings(line)
    assert key == "ExecStart"
    assert systemd_exec_argv(value) == ["/bin/x", text, "last"]


@given(hostile)
def test_systemd_path_and_text_read_back_or_refuse(text: str) -> None:
    path = "/srv/" + text
    try:
        quoted = sd_path(path)
    except UntrustedValue as exc:
        one_line_refusal(exc)
        assert CONTROL_RE.search(path) or '"' in path or "\\" in path
    else:
        ((_, _, value),) = systemd_settings(f"ReadOnlyPaths={quoted}\n")
        words = systemd_words(value, cunescape=False)
        assert [systemd_specifiers(w) for w in words] == [path]
    try:
        quoted = sd_text(text)
    except UntrustedValue as exc:
        one_line_refusal(exc)
    else:
        ((_, _, value),) = systemd_settings(f"Description=a {quoted} b\n")
        assert systemd_specifiers(value) == f"a {text} b"


@given(hostile)
def test_plist_text_reads_back(text: str) -> None:
    try:
        quoted = xml_text(text)
    except UntrustedValue as exc:
        one_line_refusal(exc)
        return
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
        f"<key>K</key><string>{quoted}</string></dict></plist>\n"
    )
    assert plistlib.loads(doc.encode("utf-8")) == {"K": text}


@given(hostile)
def test_comments_stay_one_line_and_inert(text: str) -> None:
    for xml in (False, True):
        out = comment(text, xml=xml)
        assert out.splitlines() == [out] or out == ""
        assert "\u2028" not in out and "\x85" not in out
        if xml:
            assert "--" not in out and not out.endswith("-")


@given(hostile)
def test_modelfile_values_read_back_as_ollama_parses_them(text: str) -> None:
    for quote in (False, True):
        try:
            line = f"FROM /m.gguf\nPARAMETER stop {mf_value(text, quote=quote)}\n"
        except UntrustedValue as exc:
            one_line_refusal(exc)
            continue
        assert modelfile_commands(line) == [("model", "/m.gguf"), ("stop", text)]
    block = text + "\nsecond line\n"
    try:
        line = f"FROM /m.gguf\nTEMPLATE {mf_block(block)}\nPARAMETER num_ctx 5\n"
    except UntrustedValue as exc:
        one_line_refusal(exc)
        return
    assert modelfile_commands(line) == [
        ("model", "/m.gguf"),
        ("template", block),
        ("num_ctx", "5"),
    ]


def test_modelfile_refuses_what_would_close_the_block() -> None:
    with pytest.raises(UntrustedValue, match='"""'):
        mf_block('{{ .Prompt }}"""\nSYSTEM evil\n"""')
    with pytest.raises(UntrustedValue):
        mf_value('"""')


@given(hostile)
def test_shell_word_reads_back(text: str) -> None:
    try:
        quoted = sh(text)
    except UntrustedValue as exc:
        one_line_refusal(exc)
        return
    assert shlex.split(f"cmd {quoted} end") == ["cmd", text, "end"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_shell_word_is_inert_in_a_real_shell(tmp_path: Path) -> None:
    words = ["o;$(touch X)", "`touch Y`", "$HOME", "a'b", "!x", "*", "~"]
    line = "printf '%s\\n' " + " ".join(sh(w) for w in words)
    out = subprocess.run(["sh", "-c", line], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.splitlines() == words
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@given(hostile)
def test_markdown_text_and_code_read_back(text: str) -> None:
    try:
        quoted, code = md(text), md_code(text)
    except UntrustedValue as exc:
        one_line_refusal(exc)
        return
    if not text.strip(" \u00a0"):
        return  # blank text has no inline token to compare
    for snippet in (quoted, code):
        tokens = markdown_tokens(f"# title\n\nbefore {snippet} after\n")
        assert [t.type for t in tokens if t.type.endswith("_open")] == [
            "heading_open",
            "paragraph_open",
        ]
        assert inline_kinds(tokens) <= {"text", "code_inline"}
        assert inline_text(tokens)[1] == f"before {text} after"


# The templates each file type uses, and the syntaxes they may print.
def _shipped_templates() -> list[str]:
    root = data_dir("templates")
    return sorted(
        f"{folder.name}/{t.name}"
        for folder in root.iterdir()
        if folder.is_dir() and folder.name != "ansible"  # its own environment (core/fleet.py)
        for t in folder.iterdir()
        if t.name.endswith(".j2")
    )


@pytest.mark.parametrize("name", _shipped_templates())
def test_every_rendered_template_is_strict(name: str) -> None:
    if name.startswith("image/"):
        return  # the image Dockerfile is not a render target (deployer/core/serve/image.py)
    assert render_mod._strict_syntaxes(name), f"{name} prints values unchecked"


def test_strict_template_refuses_an_unfiltered_or_foreign_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(render_mod, "_ENV", None)
    monkeypatch.setattr(render_mod, "STRICT_TEMPLATES", {"": frozenset({"yaml"})})
    env = render_mod.template_env()
    assert env.from_string("a: {{ v | yaml }} {{ n }}").render(v="x: y", n=3) == 'a: "x: y" 3'
    for bad in ("{{ v }}", "{{ v | sh }}", "{{ 'lit' }}", "{{ flag }}"):
        with pytest.raises(render_mod.UnquotedValue):
            env.from_string(bad).render(v="x", flag=True)
    monkeypatch.setattr(render_mod, "_ENV", None)


def test_executable_escaping_is_what_systemd_reads(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    folder = tmp_path / "a b$x%n;&é"
    folder.mkdir()
    binary = folder / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    unit = tmp_path / "t.service"
    unit.write_text(f"[Service]\nExecStart={sd_word(str(binary), executable=True)} -v\n")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    unit.write_text(f"[Service]\nExecStart={sd_word(str(folder / 'nope'), executable=True)}\n")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert str(folder / "nope") in proc.stderr  # systemd names the path exactly as given
