"""Per device: keys, rate limit, retries, the Renew call, reconcile, verify, hand-over."""

from batch.renew.device import Renewer
from batch.renew.due import Due
from batch.renew.keys import CsrError, KeyMaterial
from batch.renew.limiter import RateLimiter
from batch.renew.reconcile import CaCache, Found
from batch.renew.retry import Attempted, Retrier, RetryPolicy
from batch.renew.verify import Verified, verify_issued

__all__ = [
    "Attempted",
    "CaCache",
    "CsrError",
    "Due",
    "Found",
    "KeyMaterial",
    "RateLimiter",
    "Renewer",
    "Retrier",
    "RetryPolicy",
    "Verified",
    "verify_issued",
]
