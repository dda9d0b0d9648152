"""Readers for the rendered syntaxes that have no Python parser: how their consumers read them.

Each follows the consumer's own parser, cited per function, so that a test can check that a
quoted value reads back literally and that a file holds exactly the settings it should.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_C_ESCAPES.update({"\\": "\\", '"': '"', "'": "'", "s": " "})


def systemd_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, raw value) per setting, as systemd's config_parse reads a unit file.

    Comment lines are skipped; a line ending in an unescaped backslash continues on the next.
    """
    out: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped[0] in "#;"):
            continue
        if pending and stripped[:1] in ("#", ";"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if m := re.fullmatch(r"\s*\[([^\]]+)\]\s*", line):
            section = m.group(1)
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        out.append((section, key.strip(), value.strip()))
    assert not pending, "unit ends inside a continuation"
    return out


def systemd_words(value: str, *, cunescape: bool = True) -> list[str]:
    """Words of a setting, as systemd's extract_first_word(EXTRACT_UNQUOTE[|EXTRACT_CUNESCAPE])
    splits them: quotes anywhere in a word, backslash escapes (C escapes when cunescape)."""
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t\n":
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote = ""
        while i < n:
            c = value[i]
            if c == "\\":
                nxt = value[i + 1]
                if cunescape:
                    assert nxt in _C_ESCAPES, f"unsupported escape \\{nxt}"
                    word.append(_C_ESCAPES[nxt])
                else:
                    word.append(nxt)
                i += 2
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
            elif c in "\"'":
                quote = c
            elif c in " \t\n":
                break
            else:
                word.append(c)
            i += 1
        assert not quote, "unterminated quote"
        words.append("".join(word))


def systemd_specifiers(text: str) -> str:
    """'%%' as systemd expands it; any other specifier fails the test (none is rendered)."""
    assert re.fullmatch(r"(?:[^%]|%%|%d)*", text), f"unexpected specifier in {text!r}"
    return text.replace("%%", "%")


def systemd_exec_argv(value: str) -> list[str]:
    """ExecStart= as the argv systemd executes: words, specifiers, then '$$' in arguments
    (systemd's replace_env_argv; the executable gets no expansion)."""
    words = [systemd_specifiers(w) for w in systemd_words(value)]
    for w in words[1:]:
        assert not re.search(r"(?<!\$)\$(?:\$\$)*(?!\$)[{A-Za-z_]", w.replace("$$", "")), w
    return words[:1] + [w.replace("$$", "$") for w in words[1:]]


_MODELFILE_COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer"}
_MODELFILE_COMMANDS |= {"parser", "parameter", "message", "requires"}


def _modelfile_next(r: str, state: str) -> tuple[str, str]:
    """Ollama's parseRuneForState: the next state and the rune to keep ('' for none)."""
    space, newline = r in " \t", r in "\r\n"
    if state == "nil":
        return ("comment", "") if r == "#" else ("nil", "") if space or newline else ("name", r)
    if state == "name":
        assert (r.isascii() and r.isalpha()) or space, f"invalid command rune {r!r}"
        return ("name", r) if not space else ("value", "")
    if state == "param":
        assert (r.isascii() and (r.isalnum() or r == "_")) or space, f"bad parameter rune {r!r}"
        return ("param", r) if not space else ("value", "")
    if state == "value":
        return ("nil", r) if newline or space else ("value", r)
    return ("nil", "") if newline else ("comment", "")


def _modelfile_unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's parser.ParseFile reads a Modelfile: a port of its
    state machine (a value ends at a line break once its quotes are closed; no escapes; runes
    that strconv.IsPrint rejects are dropped, except spaces and line breaks inside a value)."""
    cmds: list[tuple[str, str]] = []
    state, buf, name = "nil", "", ""
    for ch in text:
        nxt, r = _modelfile_next(ch, state)
        if nxt != state:
            if state == "name":
                word = buf.lower()
                assert word in _MODELFILE_COMMANDS, f"invalid command {word!r}"
                if word == "parameter":
                    nxt = "param"
                name = "model" if word == "from" else word
            elif state == "param":
                name = buf
            elif state == "value":
                value, ok = _modelfile_unquote(buf.strip())
                if not ok or r in " \t":
                    buf += r
                    continue
                cmds.append((name, value))
            buf, state = "", nxt
        if r and r.isprintable():
            buf += r
    if state == "value":
        value, ok = _modelfile_unquote(buf.strip())
        assert ok, "unterminated quote at the end"
        cmds.append((name, value))
    assert state in ("nil", "comment", "value"), f"ends in state {state}"
    return cmds


def markdown_tokens(text: str) -> list[Token]:
    """Block tokens of a Markdown file (CommonMark, as GitHub and most viewers read it)."""
    return MarkdownIt("commonmark").parse(text)


def inline_kinds(tokens: list[Token]) -> set[str]:
    """Every inline token type in the document (text, code_inline, link_open, html_inline...)."""
    return {c.type for t in tokens if t.type == "inline" for c in t.children or []}


def inline_text(tokens: list[Token]) -> list[str]:
    """Each inline run's literal text (text and code spans), one string per paragraph/heading."""
    return [
        "".join(c.content for c in t.children or [] if c.type in ("text", "code_inline"))
        for t in tokens
        if t.type == "inline"
    ]


def shell_script(text: str) -> list[list[str]]:
    """Every command of a shell script (see shell_lines), blank and comment lines dropped."""
    lines: list[list[str]] = []
    for line in text.splitlines():
        words, _ = _shell_words(line, 0, lines, nested=False)
        if words:
            lines.append(words)
    return lines


def shell_lines(tokens: list[Token]) -> list[list[str]]:
    """Every command of every code block as the argv a POSIX shell would pass: each line, and
    each command substitution `$( )` inside it as a command of its own (its place in the outer
    word kept as `$(...)`)."""
    lines: list[list[str]] = []
    for t in tokens:
        if t.type in ("code_block", "fence"):
            for line in t.content.splitlines():
                if line.strip():
                    words, _ = _shell_words(line, 0, lines, nested=False)
                    lines.append(words)
    return lines


def _shell_words(line: str, i: int, out: list[list[str]], *, nested: bool) -> tuple[list[str], int]:
    """Words from line[i:] to the end (or to the ')' closing a substitution): quotes as POSIX
    2.2 reads them, '#' at a word start a comment, `$( )` read recursively into `out`.
    Operators (&&, ;, |, >, parentheses) are kept as plain words."""
    words: list[str] = []
    word: list[str] | None = None
    n = len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
        elif (c == "#" and word is None) or (c == ")" and nested):
            break  # a comment, or the end of a command substitution
        elif c in "()":  # a subshell: its own token, as the shell's operators are
            if word is not None:
                words.append("".join(word))
                word = None
            words.append(c)
            i += 1
        elif c == "'":
            end = line.index("'", i + 1)
            word = (word or []) + [line[i + 1 : end]]
            i = end + 1
        elif c == '"':
            i += 1
            part: list[str] = []
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '$`"\\':
                    part.append(line[i + 1])
                    i += 2
                elif line.startswith("$(", i):
                    inner, i = _shell_words(line, i + 2, out, nested=True)
                    out.append(inner)
                    part.append("$(...)")
                    i += 1
                else:
                    assert line[i] not in "`", "backquotes are not rendered"
                    part.append(line[i])
                    i += 1
            word = (word or []) + ["".join(part)]
            i += 1
        elif c == "\\":
            word = (word or []) + [line[i + 1]]
            i += 2
        elif line.startswith("$(", i):
            inner, i = _shell_words(line, i + 2, out, nested=True)
            out.append(inner)
            word = (word or []) + ["$(...)"]
            i += 1
        else:
            assert c != "`", "backquotes are not rendered"
            word = (word or []) + [c]
            i += 1
    if word is not None:
        words.append("".join(word))
    return words, i
