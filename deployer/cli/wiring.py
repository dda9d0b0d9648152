"""Build the real adapters and hand them to core: the one place that knows both.

Imports are lazy: `ps` and `down` build a record store here and must not load the planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.adapters.clock import SystemClock
    from deployer.adapters.secrets import FileSecretStore
    from deployer.adapters.state_store import FileRecordStore
    from deployer.core.fit.plan import License, PlanResult
    from deployer.core.hardware.profiles import Profile
    from deployer.core.model.catalog import CatalogModel
    from deployer.core.model.facts import ModelFacts


def hub_reader() -> object:
    """The real Hub adapter (imports huggingface_hub lazily)."""
    from deployer.adapters.hub import HfHubReader

    return HfHubReader()


def pick_profile(profile_id: str | None, detect: bool) -> Profile:
    """The profile named, the detected one, or the detected one when neither is given."""
    from deployer.core.hardware.profiles import get_profile, load_profiles

    profiles = load_profiles()
    if profile_id and not detect:
        return get_profile(profile_id, profiles)
    from deployer.adapters.system_probe import probe_system
    from deployer.core.hardware.detect import detected_profile

    return detected_profile(probe_system(), profiles)


def catalog_entry(ref: str) -> CatalogModel | None:
    """The catalog model `ref` names, if it names one."""
    from deployer.core.model.catalog import get_model, load_catalog
    from deployer.core.model.resolve import HF_PREFIX

    if ref.startswith(HF_PREFIX) or ref.lower().endswith(".gguf") or ref == "demo":
        return None
    return get_model(ref, load_catalog())


def plan_candidates(ref: str, quant: str | None) -> tuple[str, list[ModelFacts], License | None]:
    """Every quant worth comparing for `ref` (all catalog quants; else the one file)."""
    from deployer.core.fit.plan import License
    from deployer.core.model.resolve import HF_PREFIX, resolve_model
    from deployer.core.model.weights import facts_from_catalog

    entry = catalog_entry(ref)
    if entry is not None:
        if quant is not None:
            from deployer.core.model.catalog import get_quant

            get_quant(entry, quant)  # unknown quant: a clear error before any planning
        facts = [facts_from_catalog(entry, q) for q in entry.quants]
        lic = entry.license
        return entry.id, facts, License(lic.id, lic.commercial_use, lic.restricts_use, lic.gated)
    hub = hub_reader() if ref.startswith(HF_PREFIX) else None
    one = resolve_model(ref, quant, hub=hub)  # type: ignore[arg-type]
    return ref, [one], None


def check_backend(backend: str) -> None:
    """Refuse a backend deployer does not know."""
    from deployer.core.errors import InvalidRequest

    if backend not in ("llamacpp", "ollama"):
        raise InvalidRequest(f"unknown backend '{backend}'", "Use llamacpp or ollama.")


def plan_for(
    ref: str,
    prof: Profile,
    *,
    quant: str | None,
    ctx: int | None,
    parallel: int,
    kv_type: str,
    backend: str,
    suggest_profiles: bool = False,
) -> PlanResult:
    """Plan `ref` on `prof` as plan, render and deploy all do (bigger profiles on request)."""
    from deployer.core.fit.plan import PlanRequest, make_plan
    from deployer.core.hardware.profiles import load_profiles

    model_name, candidates, lic = plan_candidates(ref, quant)
    req = PlanRequest(
        quant=quant, ctx=ctx, parallel=parallel, kv_type=kv_type.lower(), backend=backend
    )
    others = list(load_profiles().values()) if suggest_profiles else None
    return make_plan(model_name, candidates, prof, req, license=lic, other_profiles=others)


def require_fit(result: PlanResult, ref: str) -> None:
    """Refuse to render or deploy a plan that does not fit, naming the command that explains."""
    from deployer.core.errors import InvalidRequest

    if not result.fits:
        prof = result.profile.id
        raise InvalidRequest(
            f"{result.model} {result.chosen.facts.quant} does not fit {prof}",
            f"Run 'deployer plan {ref} --profile {prof}' for what would.",
        )


def record_store() -> FileRecordStore:
    """The deployment records under the state dir."""
    from deployer.adapters.state_store import FileRecordStore

    return FileRecordStore()


def secret_store() -> FileSecretStore:
    """The API key files under the state dir."""
    from deployer.adapters.secrets import FileSecretStore

    return FileSecretStore()


def clock() -> SystemClock:
    """The real clock core measures and polls with."""
    from deployer.adapters.clock import SystemClock

    return SystemClock()
