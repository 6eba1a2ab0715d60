"""Status conditions, Kubernetes style (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def set_condition(
    conditions: list[dict[str, Any]] | None,
    kind: str,
    ok: bool,
    reason: str,
    message: str,
) -> list[dict[str, Any]]:
    """The conditions with one replaced; its transition time moves only when its status does."""
    status = "True" if ok else "False"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    found = False
    for condition in conditions or []:
        if condition.get("type") == kind:
            found = True
            changed = condition.get("status") != status
            condition = {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now if changed else condition.get("lastTransitionTime", now),
            }
        out.append(condition)
    if not found:
        out.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            }
        )
    return out
