"""The validity a renewal asks for, and what to tell the operator when EnOS refuses it.

EnOS applies its own default when a request carries no validDay (730 days on the English pages,
the deployment's default on the Chinese one), and refuses any value, default included, above the
product's maximum (reference §1.4). So the job asks for a validity only when the row or
`--valid-days` does; otherwise it sends none and reports what EnOS granted.
"""

from __future__ import annotations

import re

from batch.model import Device

TOO_LONG = "exceeds the maximum certificate validity period"
# GUESS: no page shows a message stating the maximum; if one does ("maximum: 365 days"), say it.
_STATED_MAXIMUM = re.compile(r"maximum[^0-9]{0,20}?([0-9]+)\s*days?", re.IGNORECASE)


def requested_days(device: Device, option: int | None) -> int | None:
    """The days this renewal asks for: the row's validDay, else --valid-days, else none."""
    return device.valid_day or option


def too_long_advice(message: str, requested: int | None) -> str | None:
    """The operator's message for EnOS's "validity above the product maximum" error, else None."""
    if TOO_LONG not in message.lower():
        return None
    stated = _STATED_MAXIMUM.search(message)
    limit = f"at most {stated.group(1)} days" if stated else "EnOS does not say the maximum"
    asked = (
        f"the requested {requested} days exceed"
        if requested is not None
        else "no validDay was sent and EnOS's default validity exceeds"
    )
    return (
        f"{asked} the product's maximum certificate validity ({limit}): pass --valid-days "
        f"(or a validDay column) within it. EnOS said: {message}"
    )
