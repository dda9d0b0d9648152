"""Templates print what Python hands them: change a constant and every rendered file follows.

Each golden variant is rendered again with the shared constants (deployer/core/serve/
conventions.py) changed; no old value may be left in any file, as a literal a template kept
would be. A scan of the templates keeps arithmetic and comparisons out of them.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

from deployer.core.fleet import hosts
from deployer.core.fleet.hosts import render_playbook
from deployer.core.serve import conventions, render, rendered
from deployer.core.serve.conventions import tmpfs_options
from tests.unit.test_playbook_golden import VARIANTS as PLAYBOOK_VARIANTS
from tests.unit.test_render_golden import ALL_VARIANTS, render_variant

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

CHANGED: dict[str, object] = {
    "NOBODY_UID": 4242,
    "NOBODY": "4242:4343",
    "ROOT_USER": "1:1",
    "HEALTH_PATH": {"llamacpp": "/healthz", "ollama": "/api/versionz"},
    "MODEL_DIR": PurePosixPath("/weights"),
    "API_KEY_IN_CONTAINER": "/var/keys/token",
    "MODELFILE": "Ollamafile",
    "MODELFILE_IN_CONTAINER": "/deployerx/Ollamafile",
    "TMP_DIR": "/scratch",
    "TMP_SIZE_MIB": 97,
    "OLLAMA_TMPFS": {"/scratch": tmpfs_options(257)},
    "HEALTH_INTERVAL_S": 11,
    "HEALTH_TIMEOUT_S": 6,
    "HEALTH_RETRIES": 4,
    "STARTUP_PERIOD_S": 7,
    "LIVENESS_PERIOD_S": 21,
    "WATCHDOG_EVERY_S": 31,
    "WATCHDOG_MAX_TIME_S": 9,
    "WATCHDOG_ACCURACY_S": 3,
    "READY_POLL_S": 4,
    "READY_MAX_TIME_S": 8,
    "START_GRACE_S": 33,
    "STOP_TIMEOUT_S": 34,
    "RESTART_DELAY_S": 6,
    "LAUNCHD_THROTTLE_S": 12,
    "LOADER_IMAGE": "registry.example/loader:9",
    "LOADER_COMMAND": ["sleep", "7200"],
    "LOADER_WAIT_S": 301,
    "SMOKE_PROMPT": "Say hi.",
    "SMOKE_MAX_TOKENS": 9,
    "CREDENTIAL": "key",
    "PVC_HEADROOM_PCT": 25,
    "ROLLOUT_GRACE_S": 61,
}
# What the shipped values look like in a rendered file; none may survive the change.
OLD = [
    r"65534",
    r'"0:0"',
    r"(?<![\w/])/health\b",
    r"/api/version\b",
    r"(?<![\w/])/models\b",
    r"/run/secrets",
    r"^\s+api_key:|(key|path|target|source): \"?api_key",
    r"(?<![\w/])/tmp\b",
    r"size=(64|256)m",
    r"64Mi",
    r"(?<![\w./])Modelfile",
    r"busybox:1\.36",
    r"\b3600\b",
    r"--timeout=300s",
    r"plus 10%",
    r"(interval|timeout|retries|periodSeconds|timeoutSeconds|failureThreshold): (10s|5s|3|5|10|20)$",
    r"every 30 s",
    r"(OnUnitActiveSec|AccuracySec)=(30|5)s",
    r"<integer>(30|10)</integer>",
    r"--max-time (5|10)\b",
    r"--retry-delay 2\b",
    r"Say hello\.",
    r"max_tokens\W+8\b",
    r"(TimeoutStopSec|RestartSec)=(30|5)$",
]


@pytest.fixture
def changed_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name is read where it was imported: change it in every module that holds it.
    for module in (conventions, render, rendered, hosts):
        for name, value in CHANGED.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)


def _leftovers(text: str) -> list[str]:
    return [
        f"{pattern}: {line.strip()}"
        for line in text.splitlines()
        for pattern in OLD
        if re.search(pattern, line)
    ]


@pytest.mark.usefixtures("changed_constants")
@pytest.mark.parametrize("variant", sorted(ALL_VARIANTS))
def test_rendered_files_follow_the_constants(variant: str) -> None:
    bundle = render_variant(variant)
    for rel, text in bundle.files.items():
        assert not _leftovers(text), f"{variant}/{rel} keeps a literal: {_leftovers(text)}"
    text = "\n".join(bundle.files.values())
    assert ("/healthz" if bundle.backend == "llamacpp" else "/api/versionz") in text
    if bundle.image:
        assert "4242" in text and "/scratch" in text


@pytest.mark.usefixtures("changed_constants")
@pytest.mark.parametrize("variant", sorted(PLAYBOOK_VARIANTS))
def test_playbooks_follow_the_constants(variant: str) -> None:
    kind, ctx = PLAYBOOK_VARIANTS[variant]
    text = render_playbook(kind, **ctx)
    assert "65534" not in text and "/deployer/Modelfile" not in text
    if kind == "deploy":
        assert "chown 4242:4343 api_key" in text and "-f /deployerx/Ollamafile" in text
        assert 'content: "Say hi."' in text and "max_tokens: 9" in text


# Inside our own delimiters: no arithmetic, concatenation, comparison or number. Filters'
# keyword options (`mf(quote=True)`) are not values.
_EXPR_RE = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}|\[\[(.*?)\]\]|\[%(.*?)%\]", re.S)
_FORBIDDEN_RE = re.compile(r"[~+*/%]|==|!=|<|>|(?<![\w])[-\d]")


def _our_expressions(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.parent.name == "ansible":
        # `{{ }}` there is Ansible's own, evaluated on each host: only [[ ]] and [% %] are ours.
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "", text, flags=re.S)
    out = []
    for m in _EXPR_RE.finditer(text):
        body = next(g for g in m.groups() if g is not None)
        out.append(body.strip().strip("+-").strip())
    return out


@pytest.mark.parametrize(
    "template", sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.j2"))
)
def test_templates_do_not_compute(template: str) -> None:
    exprs = _our_expressions(TEMPLATES / template)
    bad = [e for e in exprs if _FORBIDDEN_RE.search(e)]
    assert not bad, f"{template} computes in the template: {bad} (give it a name in Python)"
