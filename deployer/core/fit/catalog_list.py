"""What `models list` shows: catalog models by family, optionally only those with a quant
that fits a hardware profile fully (with the plan that fits)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.core.errors import NotFoundError

if TYPE_CHECKING:  # pydantic models load only when a command runs (fast --help)
    from deployer.core.fit.plan import PlanResult
    from deployer.core.hardware.profiles import Profile
    from deployer.core.model.catalog import CatalogModel

# A filter keeps or drops one model; the listing applies every filter it is given, so later
# options (a hardware profile, a licence) only add a filter here.
ModelFilter = Callable[["CatalogModel"], bool]


class FamilyNotFound(NotFoundError):
    """No catalog model belongs to that family."""

    def __init__(self, name: str, close_matches: list[str]) -> None:
        super().__init__("model family", name, close_matches, "Run 'deployer models list'.")


def family_filter(family: str, catalog: dict[str, CatalogModel]) -> ModelFilter:
    """A filter for one family (case-insensitive); FamilyNotFound when no model has it."""
    families = sorted({m.family for m in catalog.values()})
    wanted = family.lower()
    if wanted not in families:
        raise FamilyNotFound(family, difflib.get_close_matches(wanted, families, n=3, cutoff=0.5))
    return lambda model: model.family == wanted


def select_models(
    catalog: dict[str, CatalogModel], filters: Iterable[ModelFilter] = ()
) -> list[CatalogModel]:
    """Models that pass every filter, by family and then size."""
    checks = list(filters)
    kept = [m for m in catalog.values() if all(check(m) for check in checks)]
    return sorted(kept, key=lambda m: (m.family, m.params_b, m.id))


def fits_filter(profile: Profile, ctx: int | None, fits: dict[str, PlanResult]) -> ModelFilter:
    """A filter keeping models with a quant that fits `profile` fully; records each plan."""

    def check(model: CatalogModel) -> bool:
        if ctx is not None and ctx > model.arch.ctx_train:
            return False
        from deployer.core.fit.plan import PlanRequest, make_plan
        from deployer.core.model.weights import facts_from_catalog

        facts = [facts_from_catalog(model, q) for q in model.quants]
        result = make_plan(model.id, facts, profile, PlanRequest(ctx=ctx))
        if result.fits:
            fits[model.id] = result
        return result.fits

    return check


@dataclass
class ModelListing:
    """The models to show, and per model id the plan that fits (only with a profile)."""

    models: list[CatalogModel]
    fits: dict[str, PlanResult] = field(default_factory=dict)

    def fit_json(self, model_id: str) -> dict[str, object] | None:
        """The `fit` field `models list --json` gives a model that fits; None otherwise."""
        if model_id not in self.fits:
            return None
        d = self.fits[model_id].as_dict()
        keys = ("profile", "quant", "ctx", "n_gpu_layers", "predicted_tokens_per_s")
        return {k: d[k] for k in keys} | {"total_bytes": d["memory"]["total_bytes"]}


def list_models(
    catalog: dict[str, CatalogModel],
    *,
    family: str | None = None,
    profile: Callable[[], Profile] | None = None,
    ctx: int | None = None,
) -> ModelListing:
    """Catalog models of `family` (if given) that fit the profile at `ctx` (if given).

    `profile` is looked up only after the family is known to exist (an unknown family is the
    error a user sees first)."""
    filters: list[ModelFilter] = []
    if family:
        filters.append(family_filter(family, catalog))
    fits: dict[str, PlanResult] = {}
    if profile is not None:
        filters.append(fits_filter(profile(), ctx, fits))
    return ModelListing(select_models(catalog, filters), fits)
