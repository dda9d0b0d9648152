"""Build the real adapters and hand them to core: the one place that knows both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Imports of core stay inside the functions: `ps`, `logs` and `down` use this module too, and
# must not load the planner, the catalog or pydantic models they never use.
if TYPE_CHECKING:
    from collections.abc import Callable

    from deployer.adapters.calibration_store import FileCalibrationStore
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.docker_engine import DockerEngine
    from deployer.adapters.local_files import LocalDisk
    from deployer.adapters.local_models import LocalModelFiles
    from deployer.adapters.secrets import FileSecretStore
    from deployer.adapters.ssh_tunnel import SshLink
    from deployer.adapters.state_store import FileRecordStore
    from deployer.core.eval.flow import EvalEdges, OpenTarget
    from deployer.core.eval.targets import TargetSpec
    from deployer.core.fit.plan import License, PlanResult
    from deployer.core.fleet.run import FleetEdges
    from deployer.core.fleet.shipping import FleetImage
    from deployer.core.hardware.profiles import Profile
    from deployer.core.model.adapter import Adapter
    from deployer.core.model.catalog import CatalogModel
    from deployer.core.model.facts import ModelFacts
    from deployer.core.model.ref import ModelRef
    from deployer.core.pull.files import HubStore
    from deployer.core.serve.containers import ContainerEngine
    from deployer.core.serve.deploy_flow import DeployEdges
    from deployer.core.serve.metrics import MetricsSource
    from deployer.core.serve.prepare import WeightsLocation
    from deployer.core.serve.servers import ProcessRuntime
    from deployer.core.state.deployments import NativeServers
    from deployer.core.state.records import DeploymentRecord, PurgeResult
    from deployer.core.state.teardown import DownSeams


def install_data_source() -> None:
    """Core reads profiles, the catalog and templates from the shipped files and the user's
    config dir (`adapters/data_files.py`); the CLI calls this once at start."""
    from deployer.adapters.data_files import PackageData
    from deployer.core.data_source import install_data_source as install

    install(PackageData())


def hub_reader() -> object:
    """The real Hub adapter (imports huggingface_hub lazily)."""
    from deployer.adapters.hub import HfHubReader

    return HfHubReader()


def hub_store(connections: int | None = None) -> HubStore:
    """The real store: huggingface_hub's cache, deployer's transfer (imports the SDK lazily)."""
    from deployer.adapters.download import HfCacheStore

    return HfCacheStore(connections=connections)


def docker_engine() -> ContainerEngine:
    """The real container engine (imports the Docker SDK lazily)."""
    from deployer.adapters.docker_engine import DockerEngine

    return DockerEngine()


def pick_profile(profile_id: str | None, detect: bool) -> Profile:
    """The profile named, the detected one, or the detected one when neither is given."""
    from deployer.core.hardware.profiles import get_profile, load_profiles

    profiles = load_profiles()
    if profile_id and not detect:
        return get_profile(profile_id, profiles)
    from deployer.adapters.system_probe import probe_system
    from deployer.core.hardware.detect import detected_profile

    return detected_profile(probe_system(), profiles)


def catalog_entry(ref: ModelRef | str) -> CatalogModel | None:
    """The catalog model `ref` names, if it names one."""
    from deployer.core.model.catalog import get_model, load_catalog
    from deployer.core.model.ref import CatalogRef, as_model_ref

    ref = as_model_ref(ref)
    if not isinstance(ref, CatalogRef):
        return None
    return get_model(ref.text, load_catalog())


def plan_candidates(
    ref: ModelRef | str, quant: str | None
) -> tuple[str, list[ModelFacts], License | None]:
    """Every quant worth comparing for `ref` (all catalog quants; else the one file)."""
    from deployer.core.fit.plan import License
    from deployer.core.model.ref import HubRef, as_model_ref
    from deployer.core.model.resolve import resolve_model
    from deployer.core.model.weights import facts_from_catalog

    ref = as_model_ref(ref)
    entry = catalog_entry(ref)
    if entry is not None:
        if quant is not None:
            from deployer.core.model.catalog import get_quant

            get_quant(entry, quant)  # unknown quant: a clear error before any planning
        facts = [facts_from_catalog(entry, q) for q in entry.quants]
        lic = entry.license
        return entry.id, facts, License(lic.id, lic.commercial_use, lic.restricts_use, lic.gated)
    hub = hub_reader() if isinstance(ref, HubRef) else None
    one = resolve_model(ref, quant, hub=hub, local=local_models())  # type: ignore[arg-type]
    return ref.text, [one], None


def check_backend(backend: str) -> None:
    """Refuse a backend deployer does not know."""
    from deployer.core.errors import InvalidRequest

    if backend not in ("llamacpp", "ollama"):
        raise InvalidRequest(f"unknown backend '{backend}'", "Use llamacpp or ollama.")


def plan_for(
    ref: ModelRef | str,
    prof: Profile,
    *,
    quant: str | None,
    ctx: int | None,
    parallel: int,
    kv_type: str,
    backend: str,
    load_mode: str | None = None,
    suggest_profiles: bool = False,
    adapters: tuple[Adapter, ...] = (),
    prompt_cache_mib: int = 0,
) -> PlanResult:
    """Plan `ref` on `prof` as plan, render and deploy all do (bigger profiles on request)."""
    from deployer.core.fit.plan import make_plan
    from deployer.core.hardware.profiles import load_profiles
    from deployer.core.model.adapter import with_adapters
    from deployer.core.serve.prepare import PlanInputs

    model_name, candidates, lic = plan_candidates(ref, quant)
    # Each adapter checked against the base and its bytes placed with their layers.
    candidates = [with_adapters(f, list(adapters)) for f in candidates]
    req = PlanInputs(
        quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type, backend=backend,
        load_mode=load_mode, prompt_cache_mib=prompt_cache_mib,
    ).plan_request()  # fmt: skip
    others = list(load_profiles().values()) if suggest_profiles else None
    result = make_plan(model_name, candidates, prof, req, license=lic, other_profiles=others)
    result.adapters = list(adapters)
    return result


def load_adapters(texts: list[str] | None) -> tuple[Adapter, ...]:
    """The --lora adapters: parsed, found or pulled (verified), their headers read."""
    if not texts:
        return ()
    from deployer.adapters.adapter_files import AdapterFiles
    from deployer.core.model.adapter import load_adapters as load

    return load(texts, AdapterFiles())


def locate_weights(ref: ModelRef, facts: ModelFacts) -> WeightsLocation:
    """Where `ref`'s weights are on this machine (or will be, and the pull that puts them)."""
    from deployer.core.model.ref import HubRef
    from deployer.core.serve.prepare import locate_weights as locate

    hub = hub_reader() if isinstance(ref, HubRef) else None
    return locate(ref, facts, cache=_HubCache(), hub=hub, local=local_models())  # type: ignore[arg-type]


class _HubCache:
    """The Hub cache, opened only when asked (demo and local files never need it)."""

    def cached_file(self, repo_id: str, filename: str) -> Path | None:
        """The file in the cache HF_HUB_CACHE (or HF_HOME) names, if there."""
        from deployer.adapters.download import HfCacheStore

        return HfCacheStore().cached_file(repo_id, filename)


def choose_image(
    engine: object, official: str, kind: str, given: str | None, backend: str = "llamacpp"
) -> tuple[str, str]:
    """The image to run and why, as DEPLOYER_IMAGE_SOURCE says (a local build when needed)."""
    import os

    from deployer.core.serve.image_choice import choose_image as choose

    def build() -> tuple[str, bool]:
        from deployer.adapters.image_build import build_runtime_image

        built = build_runtime_image(engine=engine)  # type: ignore[arg-type]
        return built.tag, built.built

    source = os.environ.get("DEPLOYER_IMAGE_SOURCE", "auto")
    return choose(engine, official, kind, given, backend, source=source, build=build)  # type: ignore[arg-type]


class _Ports:
    def choose(self, name: str, requested: int | None, host_ip: str) -> tuple[int, str]:
        from deployer.adapters.ports import choose_port

        picked = choose_port(name, requested, host_ip)
        return picked.port, picked.why

    def check_free(self, host_ip: str, port: int) -> None:
        from deployer.adapters.ports import check_port_free

        check_port_free(host_ip, port)


class _Native:
    def binary(self) -> Path:
        from deployer.adapters.native import find_llama_server

        return find_llama_server()

    def supervisor(self) -> ProcessRuntime:
        from deployer.adapters.native import NativeSupervisor

        return NativeSupervisor()

    def log_path(self, name: str) -> Path:
        from deployer.adapters.native import log_path_for

        return log_path_for(name)


def deploy_edges(say: Callable[[str], None]) -> DeployEdges:
    """The real systems `deployer deploy` talks to."""
    from deployer.adapters.host import LocalHost
    from deployer.adapters.ollama import create_in_server
    from deployer.adapters.smoke import llama_server_smoke, ollama_smoke
    from deployer.core.serve.deploy_flow import DeployEdges

    return DeployEdges(
        planner=plan_for,
        ports=_Ports(),
        hub_store=hub_store,
        engine=lambda: docker_engine(),  # looked up at call time: tests replace docker_engine
        choose_image=choose_image,
        locate_weights=locate_weights,
        keys=secret_store(),
        records=record_store(),
        clock=clock(),
        host=LocalHost(),
        files=local_files(),
        native=_Native(),
        llama_smoke=llama_server_smoke,
        ollama_smoke=ollama_smoke,
        ollama_create=create_in_server,
        say=say,
    )


class _FleetImages:
    """The image a fleet host runs when the inventory names none: chosen on this machine the
    way single-host deploy chooses it (official if present or pullable, else the local build
    for CPU llama.cpp), memoised per official tag; never fatal (hosts may still pull it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.engine: DockerEngine | None = None
        self.chosen: dict[tuple[str, str, str], FleetImage] = {}

    def _engine(self) -> DockerEngine:
        from deployer.adapters.docker_engine import DockerEngine

        if self.engine is None:
            self.engine = DockerEngine()
        return self.engine

    def __call__(self, official: str, kind: str, backend: str) -> FleetImage:
        from deployer.core.errors import DeployerError
        from deployer.core.fleet.shipping import FleetImage, registry_of
        from deployer.core.serve.image import IMAGE_REPO

        key = (official, kind, backend)
        if key in self.chosen:
            return self.chosen[key]
        local = self.source.strip().lower() == "local"
        try:
            tag, why = choose_image(self._engine(), official, kind, None, backend)
            info = self._engine().image_info(tag=tag)
            held = info.id if info is not None else None
        except DeployerError as exc:  # no engine here, or no image: the hosts may pull it
            tag, why, held = official, f"{official} (not on this machine: {exc.message()})", None
        pullable = not local and not tag.startswith(f"{IMAGE_REPO}:")
        self.chosen[key] = FleetImage(tag, why, registry_of(tag) if pullable else None, held)
        return self.chosen[key]


def fleet_edges(say: Callable[[str], None]) -> FleetEdges:
    """The real systems `deployer fleet` talks to: Ansible, the run folders, the Hub."""
    import os

    from deployer.adapters.adapter_files import AdapterFiles
    from deployer.adapters.ansible import AnsibleFleet
    from deployer.adapters.docker_engine import DockerEngine
    from deployer.adapters.fleet_cache import DiskShipCache
    from deployer.core.fleet.run import FleetEdges

    source = os.environ.get("DEPLOYER_IMAGE_SOURCE", "auto")
    images = _FleetImages(source)
    return FleetEdges(
        runner=AnsibleFleet(),
        planner=plan_for,
        hub_store=hub_store,
        check_backend=check_backend,
        files=local_files(),
        clock=clock(),
        ship_cache=DiskShipCache(engine=lambda: images.engine or DockerEngine()),
        choose_image=images,
        image_source=source,
        hf_endpoint=os.environ.get("HF_ENDPOINT", "https://huggingface.co"),
        hf_token=os.environ.get("HF_TOKEN") or None,
        say=say,
        adapters=AdapterFiles(),
    )


def fleet_link() -> SshLink:
    """How `fleet bench` reaches each host's server: ssh tunnels (deployer.adapters.ssh_tunnel)."""
    from deployer.adapters.ssh_tunnel import SshLink

    return SshLink()


def write_bundle(out: Path, files: dict[str, str]) -> list[Path]:
    """Write a rendered bundle's files under `out` (deployer.adapters.output_folder)."""
    from deployer.adapters.output_folder import write_files

    return write_files(out, files)


def record_store() -> FileRecordStore:
    """The deployment records under the state dir."""
    from deployer.adapters.state_store import FileRecordStore

    return FileRecordStore()


def secret_store() -> FileSecretStore:
    """The API key files under the state dir."""
    from deployer.adapters.secrets import FileSecretStore

    return FileSecretStore()


def local_files() -> LocalDisk:
    """This machine's files, as pull reads them."""
    from deployer.adapters.local_files import LocalDisk

    return LocalDisk()


def local_models() -> LocalModelFiles:
    """This machine's model files and the demo package, as resolve reads them."""
    from deployer.adapters.local_models import LocalModelFiles

    return LocalModelFiles()


def clock() -> SystemClock:
    """The real clock core measures and polls with."""
    from deployer.adapters.clock import SystemClock

    return SystemClock()


class _NativeServers:
    """The native servers deploy started (deployer.core.state.deployments.NativeServers)."""

    def alive(self, record: DeploymentRecord) -> bool:
        """A native server lives while its pid is provably the process deploy started."""
        from deployer.adapters.native import our_server

        assert record.pid is not None  # only records with a pid are asked about
        return our_server(record.name, record.pid, record.port) is not None

    def health(self, endpoint: str) -> str:
        """The server's /health."""
        from deployer.adapters.native import probe_health

        return probe_health(endpoint)

    def stop(self, record: DeploymentRecord, *, timeout_s: float) -> str:
        """Stop it if it is ours."""
        from deployer.adapters.native import stop_our_server

        return stop_our_server(record.name, record.pid, record.port, timeout_s=timeout_s)

    def log_path(self, name: str) -> Path:
        """The log deploy writes for `name`."""
        from deployer.adapters.native import log_path_for

        return log_path_for(name)


def native_servers() -> NativeServers:
    """The llama-server processes deploy started here."""
    return _NativeServers()


def down_seams() -> DownSeams:
    """The real systems `down` works through."""
    from deployer.core.state.teardown import DownSeams

    def purge(remaining: list[DeploymentRecord], record: DeploymentRecord) -> PurgeResult:
        from deployer.adapters.download import default_cache_dir
        from deployer.adapters.weights_purge import purge_weights

        return purge_weights(remaining, record, hub_cache=default_cache_dir())

    return DownSeams(
        engine=docker_engine(),
        records=record_store(),
        keys=secret_store(),
        natives=native_servers(),
        purge=purge,
    )


def calibrations() -> FileCalibrationStore:
    """What `deployer bench` measured on this machine (plan reads it, bench writes it)."""
    from deployer.adapters.calibration_store import FileCalibrationStore

    return FileCalibrationStore()


# --- deployer eval ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalHow:
    """How eval reaches its targets: request limits, and how a model target is deployed."""

    timeout_s: float = 120.0
    max_attempts: int = 4
    profile: Profile | None = None  # model targets are deployed on it
    runtime: str | None = None  # --runtime for model targets
    run_key: str = ""  # names the deployments a run makes


def eval_key_for(target: TargetSpec) -> str | None:
    """A url target's API key (EvalKeyMissing when its variable or file has none)."""
    from deployer.adapters.eval_runs import api_key_from

    return api_key_from(target.label, env=target.key_env, file=target.key_file)


def eval_deployment(target: TargetSpec) -> tuple[str, str, str | None]:
    """A deployment target's (API base, model name to send, key): DeploymentNotFound if none."""
    from deployer.core.errors import DeploymentNotFound

    assert target.deployment is not None
    rec = record_store().load(target.deployment)
    if rec is None:
        raise DeploymentNotFound(target.deployment, [])
    key = secret_store().read_api_key(Path(rec.api_key_path)) if rec.api_key_path else None
    model = rec.name if rec.backend == "ollama" else rec.model  # Ollama serves it by name
    return rec.endpoint.rstrip("/") + "/v1", model, key


def eval_preflight(targets: list[TargetSpec]) -> None:
    """Refuse, before any request, a target whose key or deployment is missing."""
    for t in targets:
        if t.kind == "url":
            eval_key_for(t)
        elif t.kind == "deployment":
            eval_deployment(t)


def _eval_open(target: TargetSpec, how: EvalHow, say: Callable[[str], None]) -> OpenTarget:
    import hashlib

    from deployer.adapters.chat_client import ChatClient
    from deployer.core.eval.flow import OpenTarget

    def client(base: str, model: str, key: str | None) -> ChatClient:
        return ChatClient(base, model, key, timeout_s=how.timeout_s, max_attempts=how.max_attempts)

    if target.kind == "url":
        assert target.url is not None and target.model is not None
        c = client(target.url, target.model, eval_key_for(target))
        return OpenTarget(c, close=c.close)
    if target.kind == "deployment":
        c = client(*eval_deployment(target))
        return OpenTarget(c, close=c.close)
    from deployer.core.errors import InvalidRequest
    from deployer.core.model.ref import parse_model_ref
    from deployer.core.serve.deploy import DeployResult
    from deployer.core.serve.deploy_flow import DeployRequest, deploy_model, runtime_for
    from deployer.core.serve.prepare import PlanInputs

    if how.profile is None:
        raise InvalidRequest(f"target {target.label}: deploying needs a profile")
    assert target.model is not None
    name = "eval-" + hashlib.sha256(f"{how.run_key}/{target.label}".encode()).hexdigest()[:10]
    req = DeployRequest(
        ref=parse_model_ref(target.model), profile=how.profile,
        inputs=PlanInputs(quant=target.quant, ctx=None, parallel=1, kv_type="f16",
                          backend="llamacpp", load_mode=None),
        name=name, runtime=runtime_for(how.profile, how.runtime, "llamacpp"),
    )  # fmt: skip
    say(f"{target.label}: deploying as {name}")
    done = deploy_model(req, deploy_edges(say), None)
    assert isinstance(done, DeployResult)
    rec = done.record
    key = secret_store().read_api_key(Path(rec.api_key_path)) if rec.api_key_path else None
    c = client(rec.endpoint.rstrip("/") + "/v1", done.served_model or rec.model, key)

    def close() -> None:
        from deployer.core.state.teardown import down

        c.close()
        down(down_seams(), name, all_=False, purge=False)
        say(f"{target.label}: removed {name}")

    return OpenTarget(
        c, close=close, notes=[f"{target.label}: deployed as {name} for the run, then removed"]
    )


def eval_edges(run_dir: Path, how: EvalHow, say: Callable[[str], None]) -> EvalEdges:
    """The real systems `deployer eval` talks to."""
    from deployer.adapters.eval_runs import DiskRunFolder, run_parallel
    from deployer.core.eval.flow import EvalEdges

    return EvalEdges(
        open_target=lambda t: _eval_open(t, how, say),
        folder=DiskRunFolder(run_dir),
        folder_name=str(run_dir),
        parallel=run_parallel,
    )


def eval_read_data(path: Path) -> tuple[str, str]:
    """The eval data file's text and sha256 (bounded)."""
    from deployer.adapters.eval_runs import read_data_file

    return read_data_file(path)


def eval_read_targets(path: Path) -> str:
    """A targets file's text (bounded)."""
    from deployer.adapters.eval_runs import read_targets_file

    return read_targets_file(path)


def eval_default_run_dir(key: str) -> Path:
    """The run folder of a run's key, under the state dir."""
    from deployer.adapters.eval_runs import default_run_dir

    return default_run_dir(key)


def write_report(path: Path, text: str) -> None:
    """Write an eval report file atomically (temp file + replace)."""
    from deployer.adapters.eval_runs import write_text_atomic

    write_text_atomic(path, text)


def metrics_source(name: str) -> tuple[str, MetricsSource]:
    """`name`'s endpoint and its metrics read over HTTP with its key (deployer top)."""
    import difflib

    from deployer.adapters.metrics_client import HttpMetricsSource
    from deployer.core.errors import DeploymentNotFound, MetricsUnavailable
    from deployer.core.serve.metrics import check_watchable

    rec = record_store().load(name)
    if rec is None:
        names = [r.name for r in record_store().scan().records]
        raise DeploymentNotFound(name, difflib.get_close_matches(name, names, n=3))
    check_watchable(name, rec.backend)
    from deployer.adapters.router_files import router_dir
    from deployer.core.serve.router import PRESET_FILE

    if (router_dir(name) / PRESET_FILE).is_file():
        from deployer.core.errors import InvalidRequest

        raise InvalidRequest(
            f"'{name}' is a router of several models, whose /metrics answers per model only",
            "deployer top watches one-model deployments for now (docs/metrics.md).",
        )
    key = None
    if rec.api_key_path:
        from deployer.adapters.bench_files import read_api_key
        from deployer.core.errors import InvalidRequest

        try:  # bounded, a regular file, one printable line: it goes into a header
            key = read_api_key(Path(rec.api_key_path), "its API key file")
        except InvalidRequest as exc:
            raise MetricsUnavailable(name, rec.endpoint, exc.message()) from None
    endpoint = rec.endpoint.rstrip("/")
    return endpoint, HttpMetricsSource(name, endpoint, key)
