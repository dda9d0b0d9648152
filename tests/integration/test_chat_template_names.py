"""Every built-in template name the renderer may pass is one the pinned llama-server knows
(read from its own --help: an unknown name makes it exit at start)."""

from __future__ import annotations

import subprocess

from deployer.core.model.chat_templates import _BY_ARCH, OLLAMA_FORMATS


def _builtin_names() -> set[str]:
    from deployer.adapters.image_build import llama_prefix

    out = subprocess.run([str(llama_prefix() / "bin" / "llama-server"), "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = (out.stdout + out.stderr).splitlines()
    start = next(i for i, ln in enumerate(lines) if "list of built-in templates:" in ln)
    names: set[str] = set()
    for line in lines[start + 1 :]:
        text = line.strip()
        if not text or text.startswith(("-", "(env:")):
            break
        names |= {n.strip() for n in text.split(",") if n.strip()}
    return names


def test_every_rendered_template_name_is_a_llama_server_builtin() -> None:
    known = _builtin_names()
    assert {"chatml", "gemma", "llama3"} <= known  # the parse found the list
    ours = set(_BY_ARCH.values()) | {"llama3", "mistral-v3", "llama2"} | set(OLLAMA_FORMATS)
    assert ours <= known, ours - known
