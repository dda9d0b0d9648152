"""A hostile inventory, Hub listing or file name never reaches a path, a command or a template.

The inventory loader is fed arbitrary listings (what `ansible-inventory --list` could answer
for a file someone else wrote): it returns validated hosts or raises one DeployerError whose
message is one line. The playbook variables are written so that Ansible reads every text
literally (`!unsafe`).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from deployer.adapters.ansible import unsafe_yaml
from deployer.core.errors import DeployerError
from deployer.core.fleet.hosts import check_playbook_vars, hub_weight, local_weight, run_file
from deployer.core.fleet.inventory import (
    CTX_MAX,
    HOST_RE,
    HOST_VARS,
    NAME_RE,
    FleetHost,
    deployment_name,
    hosts_from_inventory,
)
from deployer.core.untrusted import CONTROL_RE, DEPLOYMENT_NAME_RE, UntrustedValue, check_line

LOOKUP = "{{ lookup('pipe','touch SENTINEL') }}"
HOSTILE_TEXT = [
    LOOKUP,
    f"m{LOOKUP}-Q4_K_M.gguf",
    "{% for x in range(9) %}x{% endfor %}",
    "{# c #}",
    "../victimdir",
    "../../x/h",
    "/etc",
    "a b",
    "a'b",
    'a"b',
    "x\ny",
    "x\r\ny",
    "x\x00y",
    "x\u2028y",
    "x,y",
    "x:y",
    "!x",
    "~x",
    "*",
    "",
    " ",
    "-rf",
    "a" * 5000,
]
HUGE = [10**30, -(10**30), 10**5000, 2**63, -1, 0, 65536]
SHA = "a" * 64
COMMIT = "b" * 40


def _listing(hostvars: dict[Any, Any], groups: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"_meta": {"hostvars": hostvars}, "all": {"children": ["ungrouped"]},
            "ungrouped": {"hosts": [h for h in hostvars if isinstance(h, str)]},
            **(groups or {})}  # fmt: skip


def _one_line(exc: DeployerError) -> str:
    text = exc.message()
    assert not CONTROL_RE.search(text), text  # one line, and nothing that moves a terminal
    assert len(text) < 1000
    return text


def _assert_valid(h: FleetHost) -> None:
    """What every command may rely on for a host the loader gave back."""
    assert HOST_RE.fullmatch(h.host)
    for value in (h.host, h.profile, h.model, h.backend, h.name, h.quant, h.image, h.root):
        if value is not None:
            check_line(value, "test", "value")
    assert 1 <= h.port <= 65535 and (h.ctx is None or 1 <= h.ctx <= CTX_MAX)
    assert h.root.startswith("/") and h.root != "/" and posixpath.normpath(h.root) == h.root
    for name in (h.name or "deploy-name", deployment_name(h.model, h.host)):
        assert NAME_RE.fullmatch(name)
        folder = posixpath.normpath(f"{h.root}/{name}")
        assert posixpath.dirname(folder) == h.root  # one level below the root, never elsewhere


@pytest.mark.parametrize("key", sorted(set(HOST_VARS) - {"deployer_port", "deployer_ctx"}))
@pytest.mark.parametrize("value", [LOOKUP, "x\ny", "{% if 1 %}x{% endif %}"])
def test_template_syntax_and_line_breaks_are_refused_in_every_variable(
    key: str, value: str
) -> None:
    hv = {"deployer_model": "demo", key: value}
    with pytest.raises(DeployerError) as info:
        hosts_from_inventory(_listing({"node1": hv}))
    text = _one_line(info.value)
    assert "node1" in text and key in text


@pytest.mark.parametrize(
    ("hv", "words"),
    [
        ({"deployer_name": "../victimdir"}, "deployer_name"),
        ({"deployer_name": "models"}, "weights folder"),
        ({"deployer_name": "Has_Upper.dots"}, "deployer_name"),
        ({"deployer_root": "/srv/../etc"}, "deployer_root"),
        ({"deployer_root": "/"}, "deployer_root"),
        ({"deployer_root": "/srv/my models"}, "deployer_root"),
        ({"deployer_root": "srv"}, "absolute path"),
        ({"deployer_image": "img --privileged"}, "deployer_image"),
        ({"deployer_quant": "Q4/../../x"}, "deployer_quant"),
        ({"deployer_profile": "../profiles/x"}, "deployer_profile"),
        ({"deployer_port": 10**5000}, "deployer_port"),
        ({"deployer_port": "8080\n"}, "deployer_port"),
        ({"deployer_port": True}, "deployer_port"),
        ({"deployer_ctx": 4096.5}, "deployer_ctx"),
        ({"deployer_expose": "maybe"}, "deployer_expose"),
        ({"deployer_model": ["demo"]}, "deployer_model"),
        ({"deployer_model": {"a": {"b": 1}}}, "deployer_model"),
    ],
)
def test_traversal_and_malformed_values_are_refused(hv: dict[str, Any], words: str) -> None:
    with pytest.raises(DeployerError) as info:
        hosts_from_inventory(_listing({"node1": {"deployer_model": "demo", **hv}}))
    assert words in _one_line(info.value)


@pytest.mark.parametrize("host", ["../../x/h", "a/b", "h,all", "h:x", "!h", "~h.*", "a b",
                                  "h\nx", f"h{LOOKUP}", "-h", ".h", "all", "gpus", ""])  # fmt: skip
def test_host_names_that_could_traverse_or_widen_the_limit_are_refused(host: str) -> None:
    listing = _listing({host: {"deployer_model": "demo"}}, {"gpus": {"hosts": [host]}})
    with pytest.raises(UntrustedValue) as info:
        hosts_from_inventory(listing)
    assert "host name" in _one_line(info.value)


def test_a_host_outside_the_fleet_is_never_read() -> None:
    hosts = hosts_from_inventory(_listing({
        "../bastion": {"ansible_host": "10.0.0.1", "deployer_port": LOOKUP},
        "node1": {"deployer_model": "demo"},
    }))  # fmt: skip
    assert [h.host for h in hosts] == ["node1"]


def test_good_values_come_back_normalised() -> None:
    (h,) = hosts_from_inventory(_listing({"gpu-01.example.com": {
        "deployer_model": "/srv/models/My Model-Q4_K_M.gguf", "deployer_root": "//srv//deployer/",
        "deployer_port": " 9000 ", "deployer_ctx": 8192, "deployer_expose": "off",
        "deployer_name": "chat-1", "deployer_image": "registry.local:5000/llama@sha256:" + SHA,
        "deployer_quant": "IQ2_XXS", "deployer_profile": "nvidia-a10g-24gb",
    }}))  # fmt: skip
    assert (h.root, h.port, h.ctx, h.expose, h.name) == (
        "/srv/deployer",
        9000,
        8192,
        False,
        "chat-1",
    )
    _assert_valid(h)


def test_the_loader_and_the_renderer_agree_on_names() -> None:
    assert NAME_RE is DEPLOYMENT_NAME_RE  # one rule, not two copies kept equal


_texts = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT))
_values = st.one_of(
    _texts,
    st.sampled_from(HUGE),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(_texts, max_size=2),
    st.dictionaries(_texts, _texts, max_size=2),
)
_var_names = st.one_of(st.sampled_from(sorted(HOST_VARS)), st.sampled_from(["deployer_x", "a"]))
_hostvars = st.dictionaries(_var_names, _values, max_size=6).map(
    lambda hv: {"deployer_model": "demo", **hv}
)
_host_names = st.one_of(st.from_regex(HOST_RE, fullmatch=True).map(lambda h: h[:40]), _texts)


@given(st.dictionaries(_host_names, _hostvars, min_size=1, max_size=3))
def test_any_inventory_gives_valid_hosts_or_one_line(hostvars: dict[str, Any]) -> None:
    try:
        hosts = hosts_from_inventory(_listing(hostvars))
    except DeployerError as exc:
        _one_line(exc)
        return
    for h in hosts:
        _assert_valid(h)


@given(st.one_of(st.none(), st.integers(), _texts, st.lists(_values, max_size=3),
                 st.dictionaries(_texts, _values, max_size=3)))  # fmt: skip
def test_a_malformed_listing_is_one_line_not_a_traceback(listing: Any) -> None:
    for candidate in (listing, {"_meta": listing}, {"_meta": {"hostvars": listing}},
                      {"_meta": {"hostvars": {"h": listing}}}, {"g": {"hosts": listing}}):  # fmt: skip
        try:
            hosts = hosts_from_inventory(candidate)
        except DeployerError as exc:
            _one_line(exc)
        else:
            for h in hosts:
                _assert_valid(h)


@given(_texts, _texts)
def test_default_names_are_always_valid_deployment_names(base: str, host: str) -> None:
    assert NAME_RE.fullmatch(deployment_name(base, host))


_json = st.recursive(
    st.one_of(st.text(), st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def _value_tags(node: yaml.Node) -> list[tuple[str, str]]:
    """(tag, text) of every scalar that is a value, not a mapping key."""
    if isinstance(node, yaml.MappingNode):
        return [t for _, v in node.value for t in _value_tags(v)]
    if isinstance(node, yaml.SequenceNode):
        return [t for v in node.value for t in _value_tags(v)]
    return [(node.tag, node.value)]


@given(st.dictionaries(st.text(max_size=8), _json, max_size=4))
def test_every_text_in_the_playbook_variables_is_unsafe_and_survives(data: dict[str, Any]) -> None:
    text = unsafe_yaml(data)  # reads its own output back and compares: a mismatch raises
    scalars = _value_tags(yaml.compose(text, Loader=yaml.SafeLoader) or yaml.ScalarNode("", ""))
    texts = [v for v in _strings(data)]
    assert sorted(v for tag, v in scalars if tag == "!unsafe") == sorted(texts)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_the_reviewers_file_name_is_written_as_literal_text() -> None:
    name = "m{{ lookup('pipe','id > PWNED') }}-Q4_K_M.gguf"
    text = unsafe_yaml({"deployer_fleet": {"h": {"weights": [{"dest": f"/m/{name}"}]}}})
    assert f'!unsafe "/m/{name}"' in text


@pytest.mark.parametrize("name", [f"m{LOOKUP}-Q4_K_M.gguf", "../../../etc/cron.d/x",
                                  "a/./b.gguf", "a//b.gguf", "x\n.gguf", "a\\b.gguf",
                                  "C:evil.gguf", "a" * 256 + ".gguf", "x\u200b.gguf"])  # fmt: skip
def test_hub_file_names_that_traverse_or_template_are_refused(name: str) -> None:
    with pytest.raises(UntrustedValue) as info:
        hub_weight("/srv/models", "https://hub.test", "org/repo", COMMIT, name, 1, SHA)
    assert "Hub listing of 'org/repo'" in _one_line(info.value)


def test_a_hub_weight_is_pinned_quoted_and_stays_under_the_models_folder() -> None:
    w = hub_weight("/srv/models", "https://hub.test", "org/repo", COMMIT, "Q4/m x#1.gguf", 5, SHA)
    assert w.dest == "/srv/models/org--repo/Q4/m x#1.gguf"
    assert w.url == f"https://hub.test/org/repo/resolve/{COMMIT}/Q4/m%20x%231.gguf"
    bad_repos = ["../x", "_org/repo", "org/repo.", "org--x/repo", "org/repo.git"]  # pull's rule
    for repo in bad_repos:
        with pytest.raises(UntrustedValue, match="repo id"):
            hub_weight("/srv/models", "https://hub.test", repo, COMMIT, "m.gguf", 1, SHA)
    for bad in [("org/repo", "main", SHA), ("org/repo", COMMIT, "0")]:
        with pytest.raises(UntrustedValue):
            hub_weight("/srv/models", "https://hub.test", bad[0], bad[1], "m.gguf", 1, bad[2])
    with pytest.raises(UntrustedValue):
        hub_weight("/srv/models", "file:///etc", "org/repo", COMMIT, "m.gguf", 1, SHA)


def test_a_local_file_with_template_syntax_in_its_name_is_refused() -> None:
    assert local_weight("/srv/models", "/here/m.gguf", 3).dest == "/srv/models/m.gguf"
    with pytest.raises(UntrustedValue):
        local_weight("/srv/models", f"/here/m{LOOKUP}.gguf", 3)


def test_the_playbook_variables_are_checked_once_more_before_they_are_written() -> None:
    good = {"h": {"name": "n", "weights": [{"dest": "/m/a.gguf", "size": 1}], "expose": False}}
    assert check_playbook_vars(good, "fleet variables") == good
    with pytest.raises(UntrustedValue):
        check_playbook_vars({"h": {"weights": [{"dest": f"/m/{LOOKUP}"}]}}, "fleet variables")
    with pytest.raises(UntrustedValue):
        check_playbook_vars({f"h{LOOKUP}": {}}, "fleet variables")


def test_rendered_files_stay_in_their_host_folder() -> None:
    assert str(run_file("conf/Modelfile")) == "conf/Modelfile"
    for bad in ["../x", "/etc/x", "a/../../x", "a//b"]:
        with pytest.raises(ValueError):
            run_file(bad)
