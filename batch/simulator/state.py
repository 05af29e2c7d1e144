"""Everything one simulated EnOS holds: CAs, fleet, tokens, faults, counters; and its snapshot."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from batch.simulator.ca import Authority, CertificateAuthority, make_authority, public_key_sha256
from batch.simulator.certificates import CertificateService
from batch.simulator.config import SimulatorConfig
from batch.simulator.faults import FaultPlan, SlidingWindow
from batch.simulator.fleet import CertEntry, CertStatus, Fleet, FleetSource, SimDevice
from batch.simulator.tokens import TokenService

_STATUS_NAMES = {
    CertStatus.VALID: "valid",
    CertStatus.REVOKED: "revoked",
    CertStatus.EXPIRED: "expired",
}


class Stats:
    """Request counters: per endpoint, throttled, injected faults, and the busiest second."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.requests: Counter[str] = Counter()
        self.throttled = 0
        self.faults: Counter[str] = Counter({"fail": 0, "drop": 0, "lost": 0, "failAfter": 0})
        self._arrivals = SlidingWindow(None, monotonic)

    def arrived(self, endpoint: str, *, business: bool) -> None:
        """Count a request as it arrives (before authentication and rate limiting)."""
        self.requests[endpoint] += 1
        if business:
            self._arrivals.admit()

    @property
    def max_in_one_second(self) -> int:
        """The most business requests that arrived within any sliding 1-second window."""
        return self._arrivals.peak

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "throttled": self.throttled,
            "maxInOneSecond": self.max_in_one_second,
            "faults": dict(self.faults),
        }


class Simulator:
    """The state of one simulated EnOS deployment (the aiohttp app is built on top of it).

    `clock` gives wall time (epoch seconds: tokens, certificate dates); `monotonic` measures
    the rate-limit windows. Both are injectable so tests can move time.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        fleet: FleetSource = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        now = self.now()
        self.authorities: dict[Authority, CertificateAuthority] = {
            authority: make_authority(authority, now=now, days=config.ca_days)
            for authority in Authority
        }
        self.fleet = Fleet(config.org_id, now=now)
        self.fleet.seed(fleet)
        # Separate streams, so that token or request-id draws never shift the fault sequence.
        self.tokens = TokenService(
            config.app_key,
            config.app_secret,
            ttl=config.token_ttl,
            clock=clock,
            rng=random.Random(f"{config.seed}/tokens"),
            single_token=config.single_token,
        )
        self.request_ids = random.Random(f"{config.seed}/request-ids")
        self.faults = FaultPlan(config, random.Random(config.seed))
        self.limiter = SlidingWindow(config.rate_limit, monotonic)
        self.stats = Stats(monotonic)
        self.certificates = CertificateService(self.fleet, self.authorities, config, self.now)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def device(self, identity: str, org_id: str | None = None) -> SimDevice:
        """A registered device by assetId or `productKey/deviceKey` (KeyError if unknown)."""
        device = self.fleet.named(org_id or self.config.org_id, identity)
        if device is None:
            raise KeyError(identity)
        return device

    def answer_lost(self, issued: Mapping[str, object]) -> None:
        """Record that the answer carrying this newly issued certificate was never given.

        The state file then tells a renewal the client could not have seen from one it saw.
        """
        serial = int(str(issued["certSN"]))
        self.fleet.owners[serial].lost_answers.append(serial)

    def state_dict(self) -> dict[str, Any]:
        """The JSON snapshot: every device's renewals, certificates (oldest first) and the
        serials issued whose answer was lost on purpose, and the counters."""
        now = self.now()
        devices: dict[str, Any] = {}
        for key, device in self.fleet.devices.items():
            # By identity, as the state file always named them; a name another device already
            # took (assetId "pk/dk" and the pair pk + dk, or one id in two orgs) gets its key.
            name = device.identity if device.identity not in devices else key
            devices[name] = {
                "renewals": device.renewals,
                "certificates": [_cert_state(entry, now) for entry in device.certificates],
                "lostAnswers": [str(serial) for serial in device.lost_answers],
            }
        return {"devices": devices, "stats": self.stats.as_dict()}


def _cert_state(entry: CertEntry, now: datetime) -> dict[str, Any]:
    key = entry.public_key
    return {
        "serial": str(entry.serial),
        "status": _STATUS_NAMES[entry.status_at(now)],
        "notAfter": entry.not_after.isoformat(),
        "publicKeySha256": public_key_sha256(key) if key is not None else None,
    }
