"""The simulator's settings: one frozen, keyword-only value checked on construction."""

from __future__ import annotations

from dataclasses import dataclass

from batch.model import ParamPlacement

DEFAULT_ORG = "o-sandbox"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """How the simulated EnOS behaves: credentials, limits, validity rules and injected faults.

    Rates are probabilities per business call (renew/apply/list/revoke); `fail_rate`,
    `drop_rate`, `lost_rate` and `fail_after_rate` are exclusive outcomes of one draw, so their
    sum is at most 1.
    """

    app_key: str
    app_secret: str
    org_id: str = DEFAULT_ORG
    rate_limit: int | None = None  # accepted business requests per appKey in any 1 s window
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # latency is uniform in latency_ms +- jitter_ms (never below 0)
    fail_rate: float = 0.0  # answer 99500 before any effect
    drop_rate: float = 0.0  # close the connection before processing: no effect
    lost_rate: float = 0.0  # process (the renewal takes effect), then close with no reply
    fail_after_rate: float = 0.0  # process (the renewal takes effect), then answer 99500
    product_max_days: int = 3650
    # The validity EnOS applies when a request has no validDay: 730 on the English pages, "the
    # environment's default" (varies per deployment) on the Chinese 2.3.0 page.
    default_valid_days: int = 730
    # GUESS: the documented "exceeds the maximum" message does not state the maximum; a
    # deployment that appends it is imagined, so the client's parsing of it can be tested.
    validity_error_states_max: bool = False
    ca_days: int = 3650
    token_ttl: float = 7200.0  # seconds
    single_token: bool = False  # every token `get` invalidates the previous token (a guess)
    # Where Renew's certSn/validDay/issueAuthority are read; a strict gateway ignores the other.
    param_placement: ParamPlacement = ParamPlacement.BOTH
    seed: int = 0
    list_includes_pem: bool = False  # List answers a PEM in `cert` (the documented sample: serial)
    retry_after: float | None = None  # seconds to send as Retry-After on HTTP 429

    def __post_init__(self) -> None:
        if not self.app_key or not self.app_secret:
            raise ValueError("app_key and app_secret must not be empty")
        if not self.org_id:
            raise ValueError("org_id must not be empty")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 request per second")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must not be negative")
        rates = (self.fail_rate, self.drop_rate, self.lost_rate, self.fail_after_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise ValueError("fail/drop/lost/fail-after rates must be in [0, 1], sum at most 1")
        if self.product_max_days < 1 or self.ca_days < 1 or self.default_valid_days < 1:
            raise ValueError("product_max_days, default_valid_days and ca_days must be at least 1")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        try:
            object.__setattr__(self, "param_placement", ParamPlacement(self.param_placement))
        except ValueError as exc:
            raise ValueError("param_placement must be query, body or both") from exc
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
