"""Every user string that reaches a rendered file, made hostile, on every target: render either
refuses in one line, or every file reads back with exactly the structure of a benign render and
the value literally where it belongs."""

from __future__ import annotations

import json
import plistlib
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.errors import DeployerError
from deployer.core.fit.plan import PlanResult
from deployer.core.model.chat_templates import OllamaFormat
from deployer.core.serve import render as render_mod
from deployer.core.serve.render import RenderedBundle, render_plan
from deployer.core.serve.rendered import load_yaml, undollar
from tests.unit.syntax_readers import (
    inline_kinds,
    markdown_tokens,
    modelfile_commands,
    shell_lines,
    shell_script,
    systemd_exec_argv,
    systemd_settings,
    systemd_specifiers,
    systemd_words,
)
from tests.unit.test_render_golden import plan_for
from tests.unit.test_render_quoting import NASTY

# Hostile text that every syntax can carry, and text with line breaks or controls (refused).
_PRINTABLE = [p for p in NASTY if p.isprintable()]
escapable = st.lists(st.sampled_from(_PRINTABLE), min_size=1, max_size=6).map("".join)
anything = st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map("".join)
hostile = escapable | anything

FIELDS = [
    "model_ref", "model_dir", "model_file", "profile_id", "quant", "image", "api_key_dir",
    "log_dir", "binary_dir", "pull", "chat_template", "ollama_template", "name",
]  # fmt: skip
# (model, profile, backend, target) per variant; the expose flag gives llama.cpp its key file.
VARIANTS = {
    "llamacpp-compose": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "compose"),
    "llamacpp-systemd": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "systemd"),
    "llamacpp-k8s": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "llamacpp", "k8s"),
    "llamacpp-launchd": ("llama-3.1-8b-instruct", "apple-m2-ultra-192gb", "llamacpp", "launchd"),
    "ollama-compose": ("qwen2.5-7b-instruct", "cpu-x86-16c-64gb", "ollama", "compose"),
    "ollama-launchd": ("llama-3.1-8b-instruct", "apple-m2-ultra-192gb", "ollama", "launchd"),
}
BENIGN = {
    "model_ref": "some-model",
    "model_dir": "models",
    "model_file": "m-Q4_K_M",
    "profile_id": "a-profile",
    "quant": "Q4_K_M",
    "image": "example.org/img:1",
    "api_key_dir": "keys",
    "log_dir": "logs",
    "binary_dir": "bin",
    "pull": "org/repo",
    "chat_template": "gemma",
    "ollama_template": "{{ .Prompt }}",
    "name": "zz-benign",
}


def _render(variant: str, v: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> RenderedBundle:
    model, profile, backend, target = VARIANTS[variant]
    base = plan_for(model, profile, backend)
    facts = base.chosen.facts.model_copy(update={"quant": v["quant"], "has_chat_template": False})
    result: PlanResult = replace(
        base,
        model=v["model_ref"],
        profile=base.profile.model_copy(update={"id": v["profile_id"]}),
        chosen=replace(base.chosen, facts=facts),
    )
    monkeypatch.setattr(render_mod, "builtin_template", lambda arch: v["chat_template"])
    fmt = OllamaFormat(template=v["ollama_template"] + "\n{{ .Response }}", stop=(v["quant"],))
    monkeypatch.setattr(render_mod, "ollama_format", lambda arch: fmt)
    native = target in ("systemd", "launchd")
    return render_plan(
        result,
        backend=backend,
        target=target,
        model_path=Path("/srv") / v["model_dir"] / (v["model_file"] + ".gguf"),
        expose=backend == "llamacpp",
        name=v["name"],
        image=None if native else v["image"],
        api_key_file=Path("/etc") / v["api_key_dir"] / "api_key",
        binary=f"/opt/{v['binary_dir']}/server" if native else None,
        log_dir=Path("/Users/u") / v["log_dir"],
        pull_command=shlex.join(["deployer", "pull", v["pull"], "--local-dir", "/models"]),
    )


def _key_paths(doc: Any, prefix: str = "") -> set[str]:
    """Every key path of a parsed YAML/plist document (list items as '*')."""
    if isinstance(doc, dict):
        return {prefix} | {p for k, v in doc.items() for p in _key_paths(v, f"{prefix}/{k}")}
    if isinstance(doc, list):
        return {prefix} | {p for item in doc for p in _key_paths(item, f"{prefix}/*")}
    return {prefix}


def _structure(rel: str, text: str) -> Any:
    """What must not change with the values: keys, settings, commands, Markdown blocks."""
    if rel.endswith((".yml", ".yaml")):
        return _key_paths(load_yaml(text))
    if rel.endswith(".json"):
        return _key_paths(json.loads(text))
    if rel.endswith(".plist"):
        return _key_paths(plistlib.loads(text.encode()))
    if rel.endswith((".service", ".timer")):
        return [(s, k) for s, k, _ in systemd_settings(text)]
    if rel == "Modelfile":
        return [(c, "") if c != "stop" else (c, "stop") for c, _ in modelfile_commands(text)]
    if rel.endswith(".md"):
        tokens = markdown_tokens(text)
        return [(t.type, t.tag) for t in tokens], [len(w) > 0 for w in shell_lines(tokens)]
    if rel.endswith(".sh"):
        return [len(words) for words in shell_script(text)]
    raise AssertionError(rel)


def _expected_paths(v: dict[str, str]) -> tuple[str, str]:
    return f"/srv/{v['model_dir']}/{v['model_file']}.gguf", f"/etc/{v['api_key_dir']}/api_key"


def _check_values(b: RenderedBundle, v: dict[str, str]) -> None:
    """Each hostile value reads back literally where it was meant to land."""
    model_path, key_path = _expected_paths(v)
    files = b.files
    if b.target == "compose":
        doc = undollar(load_yaml(files["docker-compose.yml"]))
        svc = doc["services"]["llama-server" if b.backend == "llamacpp" else "ollama"]
        assert svc["volumes"][0]["source"] == model_path
        assert svc["labels"]["io.deployer.model"] == v["model_ref"]
        assert svc["labels"]["io.deployer.quant"] == v["quant"]
        assert v["image"] in svc["image"]
        if b.backend == "llamacpp":
            assert doc["secrets"]["api_key"]["file"] == key_path
            cmd = svc["command"]
            assert cmd[cmd.index("--chat-template") + 1] == v["chat_template"]
    elif b.target == "k8s":
        dep = load_yaml(files["deployment.yaml"])
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert undollar(c["args"]) == b.command and v["image"] in c["image"]
        assert dep["metadata"]["annotations"]["io.deployer.model"] == v["model_ref"]
    elif b.target == "systemd":
        settings = {k: val for _, k, val in systemd_settings(files[f"deployer-{b.name}.service"])}
        argv = [a if a != key_path else "%d/api_key" for a in b.native]
        assert systemd_exec_argv(settings["ExecStart"]) == argv
        assert argv[argv.index("-m") + 1] == model_path
        paths = [
            systemd_specifiers(w) for w in systemd_words(settings["ReadOnlyPaths"], cunescape=False)
        ]
        assert paths == [model_path]
        assert systemd_specifiers(settings["LoadCredential"]) == f"api_key:{key_path}"
        desc = systemd_specifiers(settings["Description"])
        assert f"({v['model_ref']} {v['quant']}, deployer)" in desc
    else:
        plist = plistlib.loads(files[f"io.deployer.{b.name}.plist"].encode())
        assert plist["ProgramArguments"] == b.native
        assert plist["ProgramArguments"][0] == f"/opt/{v['binary_dir']}/server"
        assert plist["StandardOutPath"] == f"/Users/u/{v['log_dir']}/{b.name}.log"
    if b.backend == "ollama":
        cmds = dict(modelfile_commands(files["Modelfile"]))
        assert cmds["template"] == v["ollama_template"] + "\n{{ .Response }}"
        assert cmds["stop"] == v["quant"]
        assert cmds["model"] in (model_path, f"/models/{v['model_file']}.gguf")
    tokens = markdown_tokens(files["README.md"])
    assert inline_kinds(tokens) <= {"text", "code_inline", "softbreak"}
    lines = shell_lines(tokens)
    assert ["deployer", "pull", v["pull"], "--local-dir", "/models"] in lines
    if b.target in ("systemd", "launchd"):
        assert b.native in lines  # "the same command by hand"
    chat = next(w for w in lines if w[:1] == ["curl"] and "-d" in w)
    assert json.loads(chat[chat.index("-d") + 1])["model"] in (v["model_ref"], b.name)
    if b.backend == "llamacpp" and b.target != "k8s":
        assert any(key_path in w for w in lines)


_BENIGN: dict[str, RenderedBundle] = {}


def _check(variant: str, field: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    v = {**BENIGN, field: value}
    benign = _BENIGN.get(variant) or _BENIGN.setdefault(
        variant, _render(variant, BENIGN, monkeypatch)
    )
    try:
        bundle = _render(variant, v, monkeypatch)
    except DeployerError as exc:
        msg = exc.message()
        assert msg and "\n" not in msg and "\r" not in msg and "\u2028" not in msg
        return
    assert len(bundle.files) == len(benign.files)
    for (rel, text), (benign_rel, benign_text) in zip(
        bundle.files.items(), benign.files.items(), strict=True
    ):
        for prefix in ("deployer-", "io.deployer."):
            benign_rel = benign_rel.replace(prefix + benign.name, prefix + bundle.name)
        assert rel == benign_rel
        assert _structure(rel, text) == _structure(rel, benign_text), rel
    _check_values(bundle, v)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@given(field=st.sampled_from(FIELDS), value=hostile)
def test_hostile_value_is_refused_or_reads_back(
    variant: str, field: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check(variant, field, value, monkeypatch)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_dir", "x\n[Service]\nExecStartPre=/bin/touch /tmp/pwned"),
        ("model_dir", "x\nservices:\n  evil:\n    image: evil"),
        ("model_dir", "x\u2028SYSTEM evil"),
        ("api_key_dir", "o;$(touch X)"),
        ("model_dir", "a ${HOME} %n $(id) `id` 'q' \"d\" ]]> <!-- -- # x: y"),
        ("ollama_template", '"""\nSYSTEM evil\n"""'),
        ("model_ref", "{{ lookup('pipe', 'id') }}"),
    ],
)
def test_issue_examples(
    variant: str, field: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check(variant, field, value, monkeypatch)


def test_newline_in_model_path_is_one_line_refusal_on_every_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variant in VARIANTS:
        v = {**BENIGN, "model_dir": "x\n[Service]\nExecStartPre=/bin/touch /tmp/pwned"}
        with pytest.raises(DeployerError) as info:
            _render(variant, v, monkeypatch)
        assert "model path" in info.value.message() and "\n" not in info.value.message()
