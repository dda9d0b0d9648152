"""What `down` stops and removes: a deployment's container or native server, its networks,
the volumes labelled for it, its generated key, its record and (with purge) its weights.

Only what is labelled for the name is removed; an invalid record decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from deployer.core.errors import EngineUnavailable, InvalidRequest, StateFileInvalid
from deployer.core.state.deployments import NativeServers, current_statuses
from deployer.core.state.records import DeploymentRecord, DeploymentStatus, PurgeResult

if TYPE_CHECKING:
    from deployer.core.serve.containers import ContainerEngine
    from deployer.core.state.store import RecordStore

STOP_TIMEOUT_S = 10.0

# Weights a record names that no remaining record uses, deleted from the Hub cache.
PurgeFn = Callable[[list[DeploymentRecord], DeploymentRecord], PurgeResult]


class GeneratedKeys(Protocol):
    """Removes the API key file deploy generated, and only that one."""

    def remove_generated(self, name: str, api_key_path: str | None) -> str | None:
        """Delete `name`'s generated key file; what was done, None when there is none."""
        ...


@dataclass(frozen=True)
class DownStep:
    """One thing `down` did (or left alone) for a deployment."""

    name: str
    text: str

    def line(self) -> str:
        """As printed: `name: text`."""
        return f"{self.name}: {self.text}"


@dataclass
class DownResult:
    """Every step taken, in order; whether there was nothing to do; invalid records left."""

    steps: list[DownStep] = field(default_factory=list)
    nothing_to_do: bool = False
    invalid: list[StateFileInvalid] = field(default_factory=list)


@dataclass(frozen=True)
class DownSeams:
    """The systems `down` works through."""

    engine: ContainerEngine
    records: RecordStore
    keys: GeneratedKeys
    natives: NativeServers
    purge: PurgeFn


def down(
    seams: DownSeams,
    name: str | None,
    *,
    all_: bool,
    purge: bool,
    on_step: Callable[[DownStep], None] = lambda _: None,
) -> DownResult:
    """Stop and remove `name` (or every deployment with all_); each step also goes to on_step."""
    if (name is None) == (not all_):
        raise InvalidRequest("name one deployment or pass --all, not both or neither")
    result = DownResult()

    def say(who: str, text: str) -> None:
        step = DownStep(who, text)
        result.steps.append(step)
        on_step(step)

    statuses = current_statuses(
        seams.records, seams.engine, seams.natives, need_engine=True
    ).statuses
    targets = statuses if all_ else [s for s in statuses if s.name == name]
    # An invalid record decides nothing: what it names is left alone, and the user is told
    # how to clear it (after which `down` finds a labelled container as an orphan).
    result.invalid = [st.invalid for st in targets if st.invalid is not None]
    if result.invalid and not all_:
        raise result.invalid[0]
    targets = [st for st in targets if st.invalid is None]
    needs_engine = any(s.record is None or s.record.runtime == "container" for s in targets)
    engine = seams.engine if needs_engine else None
    # Labelled volumes, listed once: each target's own, and strays whose deployment (its
    # container and record) is already gone, looked for with --all or an unknown name.
    look_for_strays = all_ or not targets
    owners = _volume_owners(seams.engine) if engine or look_for_strays else {}
    for st in targets:
        _down_one(seams, engine, st, purge=purge, volume_owners=owners, say=say)
    known = {st.name for st in targets}
    strays = {
        v: owner
        for v, owner in owners.items()
        if look_for_strays and owner not in known and (name is None or owner == name)
    }
    for vol, owner in strays.items():
        if seams.engine.remove_volume(name=vol):
            say(owner, f"removed volume {vol} (its deployment was already gone)")
    result.nothing_to_do = not targets and not strays and not result.invalid
    return result


def _down_one(
    seams: DownSeams,
    engine: ContainerEngine | None,
    st: DeploymentStatus,
    *,
    purge: bool,
    volume_owners: dict[str, str],
    say: Callable[[str, str], None],
) -> None:
    r = st.record
    if r is not None and r.runtime == "native":
        say(st.name, seams.natives.stop(r, timeout_s=STOP_TIMEOUT_S))
        if r.log_path:
            say(st.name, f"log kept at {r.log_path}")
    elif engine is not None:
        # Only a container labelled with this deployment's name is ours to stop: a record's
        # container id alone could name anyone's container.
        removed = st.container is not None and engine.stop_and_remove(
            name_or_id=st.container.id, timeout_s=STOP_TIMEOUT_S
        )
        say(st.name, "stopped and removed container" if removed else "container already gone")
        for net in r.networks if r else []:
            if engine.remove_network(name=net):
                say(st.name, f"removed network {net}")
        # Volumes labelled for this deployment (its record may be lost); one the record lists
        # without that label is someone else's.
        labelled = [v for v, owner in volume_owners.items() if owner == st.name]
        for vol in labelled:
            if engine.remove_volume(name=vol):
                say(st.name, f"removed volume {vol}")
        for vol in r.volumes if r else []:
            if vol not in labelled:
                say(st.name, f"volume {vol} is not labelled for '{st.name}'; left alone")
    if r is None:
        return
    said = seams.keys.remove_generated(r.name, r.api_key_path)
    if said:
        say(st.name, said)
    if purge:
        purged = seams.purge(seams.records.scan().records, r)
        for path in purged.deleted:
            say(st.name, f"deleted {path}")
        for path, why in purged.kept:
            say(st.name, f"kept {path} ({why})")
    seams.records.delete(r.name)
    say(st.name, "state removed")


def _volume_owners(engine: ContainerEngine) -> dict[str, str]:
    """Volumes labelled io.deployer.name -> their deployment; none when no engine answers."""
    try:
        return engine.list_deployer_volumes()
    except EngineUnavailable:
        return {}
