"""What `deployer ps` adds for router deployments: which of their models are loaded."""

from __future__ import annotations

from typing import Any

from deployer.cli.output import echo
from deployer.core.state.records import DeploymentStatus
from deployer.core.untrusted import printable


def add_router_models(rows: list[dict[str, Any]], found: list[DeploymentStatus]) -> None:
    """A `models` list on each router's row: name and status (unknown when it did not answer)."""
    from deployer.adapters.router_status import router_models
    from deployer.core.serve.router import ROUTER_LABEL, names_from_label

    for row, st in zip(rows, found, strict=True):
        label = st.container.labels.get(ROUTER_LABEL) if st.container else None
        if label is None:
            continue
        names = names_from_label(label)
        states = None
        if st.record is not None and row["status"] in ("running", "healthy", "starting"):
            states = router_models(st.record.endpoint, st.record.api_key_path)
        seen = {s.name: s.status for s in states or []}
        row["models"] = [{"name": n, "status": seen.get(n, "unknown")} for n in names]


def print_router_models(rows: list[dict[str, Any]]) -> None:
    """One line per router: each model and its state."""
    for row in rows:
        if "models" in row:
            states = ", ".join(f"{m['name']} {m['status']}" for m in row["models"])
            echo(printable(f"{row['name']}: {states}"), soft_wrap=True)
