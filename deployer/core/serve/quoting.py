"""Quote a value for the syntax of the file it lands in, or refuse it in one line.

Each function takes any text and returns a `Quoted` string that the file's own parser reads
back as exactly that text (YAML, compose, systemd, plist XML, Ollama Modelfile, POSIX shell,
Markdown), or raises UntrustedValue where that syntax has no way to say it. The strict
templates (deployer/core/serve/render.py) print nothing else: a value without its filter fails the
render. The rules per syntax are in docs/render.md ("Every value is quoted for its file").
"""

from __future__ import annotations

import json
import re
import shlex

from deployer.core.untrusted import CONTROL_RE, UntrustedValue

_YAML_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}
# A YAML plain scalar that needs no quotes: no indicator first, nothing YAML could misread.
_YAML_WORD_RE = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./-]*")
# A systemd word that needs no quotes: no whitespace, quotes, backslash, ';', '$' or '%'.
_SD_BARE_RE = re.compile(r"[A-Za-z0-9_./:=+,@-]+")
# Characters XML 1.0 cannot carry at all; '\r' can but every parser turns it into '\n'.
_XML_BAD_RE = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|\r")
# Markdown inline punctuation that can start code, emphasis, links, HTML or entities, or close
# a heading; '_' only where it can open or close emphasis (not inside a word like Q4_K_M).
_MD_RE = re.compile(r"[\\`*\[\]<>&|~!#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


class Quoted(str):
    """Text already escaped for one syntax: what strict templates may print."""

    syntax: str

    def __new__(cls, text: str, syntax: str) -> Quoted:
        obj = super().__new__(cls, text)
        obj.syntax = syntax
        return obj


def _refuse(syntax: str, value: str, problem: str, hint: str = "") -> UntrustedValue:
    return UntrustedValue(
        syntax, "value", value, problem, hint or "Rename it, or render another --target."
    )


def one_line(value: object, syntax: str) -> str:
    """The value as text, refused if it holds a line break or control character or is not
    valid UTF-8 (no rendered file can carry those safely)."""
    text = str(value)
    if CONTROL_RE.search(text):
        raise _refuse(syntax, text, "contains a control character or line break")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(syntax, text, "is not valid UTF-8") from None
    return text


def yaml_str(value: object) -> Quoted:
    """A YAML double-quoted scalar; everything outside printable ASCII as an escape."""
    out = []
    for ch in str(value):
        if ch in _YAML_PLAIN:
            out.append(ch)
        elif ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return Quoted('"' + "".join(out) + '"', "yaml")


def yaml_dollar(value: object) -> Quoted:
    """A YAML scalar whose '$' is doubled: compose interpolates `${X}` in every value, and
    Kubernetes expands `$(X)` in args; both read '$$' as one literal '$'."""
    return Quoted(yaml_str(str(value).replace("$", "$$")), "yaml-dollar")


def yaml_word(value: object, *, dollar: bool = False) -> Quoted:
    """A YAML scalar left bare when it is a plain word YAML reads back as that same text
    (`/health`, `api_key`), else double-quoted like yaml_str (or yaml_dollar)."""
    import yaml

    text = str(value)
    if _YAML_WORD_RE.fullmatch(text) and yaml.safe_load(text) == text:
        return Quoted(text, "yaml-dollar" if dollar else "yaml")
    return yaml_dollar(text) if dollar else yaml_str(text)


def sd_word(value: object, *, executable: bool = False) -> Quoted:
    """One ExecStart= word: '%' and '$' doubled, double-quoted with C escapes when needed.

    The executable itself gets no '$' expansion, and systemd refuses quotes and backslashes
    in it ("Executable name contains special characters").
    """
    text = one_line(value, "systemd unit")
    if executable:
        if re.search(r"[\"'\\]", text):
            raise _refuse("systemd unit", text, "is an executable path with a quote or backslash")
        text = text.replace("%", "%%")
    else:
        text = text.replace("%", "%%").replace("$", "$$")
    if _SD_BARE_RE.fullmatch(text):
        return Quoted(text, "systemd")
    return Quoted('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"', "systemd")


def sd_line(words: list[str], *, executable: bool = True) -> Quoted:
    """A whole ExecStart= command line (the first word is the executable)."""
    quoted = [sd_word(w, executable=executable and i == 0) for i, w in enumerate(words)]
    return Quoted(" ".join(quoted), "systemd")


def sd_path(value: object) -> Quoted:
    """One absolute path of a ReadOnlyPaths=-style list, double-quoted when needed. How systemd
    unquotes backslashes in path lists differs from ExecStart= (and between versions), so a
    path with '"' or '\\' is refused rather than escaped."""
    text = one_line(value, "systemd unit")
    if not text.startswith("/") or re.search(r"[\"\\]", text):
        raise _refuse("systemd unit", text, "is not an absolute path without '\"' or '\\'")
    text = text.replace("%", "%%")
    return Quoted(text if _SD_BARE_RE.fullmatch(text) else f'"{text}"', "systemd")


def sd_text(value: object) -> Quoted:
    """Free text of a setting (Description=, LoadCredential=): '%' doubled; a backslash is
    refused (at the end of a line systemd reads it as a continuation)."""
    text = one_line(value, "systemd unit")
    if "\\" in text:
        raise _refuse("systemd unit", text, "contains a backslash")
    return Quoted(text.replace("%", "%%"), "systemd")


def xml_text(value: object) -> Quoted:
    """Element text of a plist: "&", "<" and ">" as entities."""
    text = one_line(value, "launchd plist")
    if _XML_BAD_RE.search(text):
        raise _refuse("launchd plist", text, "contains a character XML cannot carry")
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(raw, entity)
    return Quoted(text, "xml")


def comment(value: object, *, xml: bool = False) -> Quoted:
    """A value inside a comment: as is when harmless there, else its JSON-escaped form (a
    line break would end the comment; '--' is not allowed inside an XML comment)."""
    text = str(value)
    harmless = (not CONTROL_RE.search(text) and text.isprintable()) or text == ""
    if harmless and not (xml and ("--" in text or text.endswith("-"))):
        return Quoted(text, "comment")
    escaped = json.dumps(text)
    return Quoted(escaped.replace("-", "\\u002d") if xml else escaped, "comment")


def sh(value: object) -> Quoted:
    """One POSIX shell word (shlex.quote): inert when the README's lines are pasted."""
    return Quoted(shlex.quote(one_line(value, "README")), "sh")


def sh_line(words: list[str]) -> Quoted:
    """A whole shell command line, every word quoted."""
    return Quoted(" ".join(sh(w) for w in words), "sh")


def md(value: object) -> Quoted:
    """Markdown inline text: punctuation that would start markup backslash-escaped."""
    text = one_line(value, "README")
    return Quoted(_MD_RE.sub(lambda m: "\\" + m.group(0), text), "md")


def md_code(value: object) -> Quoted:
    """A Markdown code span: a backtick fence longer than any run of backticks inside."""
    text = one_line(value, "README")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = text.startswith("`") or text.endswith("`") or (text[:1] == text[-1:] == " ")
    inner = f" {text} " if pad and text.strip(" ") else text
    return Quoted(f"{fence}{inner}{fence}", "md")


def _modelfile_checked(text: str, *, block: bool) -> str:
    # Ollama's parser drops every rune strconv.IsPrint rejects (all but ASCII space among the
    # separators and controls); only a block keeps its line breaks and tabs.
    kept = text.replace("\n", "").replace("\t", "") if block else text
    if not kept.isprintable() or "\r" in text:
        raise _refuse("Modelfile", text, "contains a character Ollama's Modelfile parser drops")
    return text


def mf_value(value: object, *, quote: bool = False) -> Quoted:
    """A one-line Modelfile argument (FROM, PARAMETER): bare when Ollama reads it back as is,
    else in double quotes (Ollama has no escapes: a value that starts with '"' is refused)."""
    text = _modelfile_checked(one_line(value, "Modelfile"), block=False)
    if text.startswith('"'):
        raise _refuse("Modelfile", text, "starts with '\"', which Ollama would read as quoting")
    if not quote and text and text == text.strip(" "):
        return Quoted(text, "modelfile")
    return Quoted(f'"{text}"', "modelfile")


def mf_block(value: object) -> Quoted:
    """A multi-line Modelfile argument (TEMPLATE) in triple quotes; text that holds '\"\"\"'
    would close them early and is refused."""
    text = _modelfile_checked(str(value), block=True)
    if '"""' in text:
        raise _refuse("Modelfile", text, 'contains \'"""\', which would end the block')
    return Quoted(f'"""{text}"""', "modelfile")
