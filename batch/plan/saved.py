"""Saved plans: `plan --save plan.json` records what was reviewed; `run --plan plan.json` refuses
to run anything else.

A reviewed plan is a promise: "these devices, with these options". The file holds the
inventory's SHA-256 and the options that decide what is renewed and how; the run recomputes
both and stops (exit 2) naming every difference, so a swapped inventory or a changed flag
between review and run never goes unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from batch.config import KeyPolicy, Scope
from batch.errors import UsageError
from batch.storage import atomic_output

FORMAT = "fleet-renew-plan/1"


def plan_options(scope: Scope, keys: KeyPolicy) -> dict[str, str | None]:
    """The options that decide what is renewed and how, as plain text for the plan file: the
    one reading of a plan's options, by `plan --save` and `run --plan` alike."""
    shard = scope.shard
    values: dict[str, object] = {
        "org": scope.org_id,
        "format": scope.inventory_format,
        "shard": f"{shard.index}/{shard.count}" if shard else None,
        "keyMode": keys.key_mode.value,
        "validDays": keys.valid_days,
        "paramsIn": keys.params_in,
        "renewWithin": scope.renew_within,
        "renewAtFraction": scope.renew_at_fraction,
        # Only when asked: plans saved before the option existed stay valid without it.
        "renewCurrent": "true" if scope.renew_current else None,
    }
    return {name: None if value is None else str(value) for name, value in values.items()}


def save_plan(
    path: Path,
    *,
    inventory_sha256: str,
    options: Mapping[str, str | None],
    counts: Mapping[str, int],
) -> None:
    document = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "inventorySha256": inventory_sha256,
        "options": dict(options),
        "counts": dict(counts),
    }
    with atomic_output(path) as stream:
        stream.write((json.dumps(document, indent=2) + "\n").encode())


def check_plan(path: Path, *, inventory_sha256: str, options: Mapping[str, str | None]) -> None:
    """Raise UsageError unless `path` is a plan for this inventory and these options."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--plan {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--plan {path} is not a readable plan: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UsageError(f"--plan {path} is not a fleet-renew plan")
    problems = []
    if document.get("inventorySha256") != inventory_sha256:
        problems.append("the inventory file changed since the plan was saved")
    saved: dict[str, str | None] = document.get("options", {})
    for name in sorted(set(saved) | set(options)):
        if saved.get(name) != options.get(name):
            problems.append(
                f"{name} was {saved.get(name)!r} in the plan, now {options.get(name)!r}"
            )
    if problems:
        raise UsageError(
            f"refusing to run: {path} no longer matches ({'; '.join(problems)}). "
            "Review a new plan with `fleet-renew plan --save`."
        )
