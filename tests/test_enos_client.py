"""The EnOS client against the real simulator over loopback, and against a scripted gateway.

Most tests run `batch.simulator` (a real aiohttp server) and the real client. Answers the
simulator never gives (a non-JSON 200, a 502 page, a TLS endpoint) come from `Gateway`, a tiny
aiohttp server of this module that records each request and answers what the test scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batch.enos import ClientConfig, EnosClient, sign
from batch.enos.errors import (
    ApiError,
    AuthError,
    EnosError,
    GatewayError,
    MalformedResponse,
    NetworkError,
    RequestTimeout,
    ThrottledError,
    TokenRejected,
    TokenServiceError,
    classify,
    is_retryable,
    may_have_taken_effect,
)
from batch.errors import UsageError
from batch.model import Device, ErrorClass
from batch.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests import certs
from tests.conftest import MovableClock

APP_KEY, APP_SECRET = "fleet-app", "fleet-secret-0123456789"
ORG = "o-sandbox"

FLEET: list[dict[str, object]] = [
    {"orgId": ORG, "assetId": "a-1", "certSn": 1001},
    {"orgId": ORG, "assetId": "a-2", "certSn": 1002},
    {"orgId": ORG, "assetId": "a-3", "certSn": 1003},
    {"orgId": ORG, "productKey": "pk-1", "deviceKey": "dk-1", "certSn": 2001},
    {"orgId": ORG, "assetId": "a-revoked", "certSn": 3001, "sandbox": "revoked"},
    {"orgId": ORG, "assetId": "a-expired", "certSn": 3002, "sandbox": "expired"},
    {"orgId": ORG, "assetId": "a-flaky", "certSn": 3003, "sandbox": "flaky"},
    {"orgId": ORG, "assetId": "a-noauth", "certSn": 3004, "sandbox": "no-cert-auth"},
    {"orgId": ORG, "assetId": "a-absent", "certSn": 3005, "sandbox": "absent"},
]

# The CSR of the documented Renew sample (reference renew-certificate.txt), RSA-2048.
SAMPLE_CSR = """-----BEGIN NEW CERTIFICATE REQUEST-----
MIICwTCCAakCAQAwfDELMAkGA1UEBhMCQ04xETAPBgNVBAgMCFNoYW5naGFpMREw
DwYDVQQHDAhTaGFuZ2hhaTENMAsGA1UECgwERW5PUzERMA8GA1UEAwwITVJtSXl6
UFcxDTALBgNVBAsMBEVuT1MxFjAUBgkqhkiG9w0BCQEWBzREbmIxVDEwggEiMA0G
CSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQC+dU5jLAu7Kb88hONou6PycTnv9+3/
FFPaHm5I8vPfhh0QL6TcunKpm97Dyds1yHgMCqVT+gWgO4MHFz8TiIb9JKRjHn/6
kFea1ccZU9nYGuv+yMGqa340NjN/vP+XpjXm6Xkqw7ujehhNoBuKJZh6+uXlf2yw
1gTP9vWJTc7cuiky2jgKl6/47iKEmIMT1xpHVDp16LWX08/aamJESPJ171RFFxf/
6z2taiK/z7McXFRHk+SdYGN0iTNZQqoFKi3S9S8FvkLBQF8gHOytZdpnSz6SZwW0
DJUv8VGFWQYOVU67BzVR59s0CVM9IdAHntjXm2t3BF0A9kKZa6VDzHpxAgMBAAGg
ADANBgkqhkiG9w0BAQsFAAOCAQEASGPYV0t4zPT3XA42SKqNzNEiYvB550/6Vh1y
mxD+mQXeyvkZn5OcxtuzrgD7aBVRcT/j+tK4XP8s+ODYiM+VSrqLs+a5ZGmOhHHf
36MdmAK8I/dNyHZBiTf+GI5ibul2vaSpYYUwarzMu0azT6+d2qiUl7TqVVIGo4+P
PSRp+V+9e4RJ/TKUjAToBazz154tXU5psVmQ1Ac9oF7Y/9AvGTtusLUDHCu3T45J
QiwAUsMkSla5HCZEftNV8uC+BR6GktfFGLv3Gx+havoBsi82OPDUbBBtKgbiIQyq
bslaLc4GkDZTZPz4st7/ChYOZVJNxz2CAx1JU4VAfjonqChzbw==
-----END NEW CERTIFICATE REQUEST-----"""


def asset(asset_id: str, cert_sn: int = 0) -> Device:
    return Device(row=2, org_id=ORG, cert_sn=cert_sn, asset_id=asset_id)


def ec_csr(common_name: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return certs.csr_pem(key, certs.name(common_name)), key


def spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def config(url: str, **overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {"base_url": url, "app_key": APP_KEY, "app_secret": APP_SECRET}
    return ClientConfig(**(values | overrides))


@asynccontextmanager
async def simulator(clock: MovableClock | None = None, **settings: Any) -> AsyncIterator[Any]:
    sim_config = SimulatorConfig(app_key=APP_KEY, app_secret=APP_SECRET, **settings)
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    async with running_simulator(sim_config, FLEET, **kwargs) as sim:
        yield sim


@asynccontextmanager
async def sim_and_client(
    *,
    clock: MovableClock | None = None,
    client_kw: Mapping[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[RunningSimulator, EnosClient]]:
    options = dict(client_kw or {})
    connector_limit = options.pop("connector_limit", 100)
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    async with simulator(clock, **settings) as sim:
        client = EnosClient(config(sim.url, **options), connector_limit=connector_limit, **extra)
        async with client:
            yield sim, client


# -- renew: success ---------------------------------------------------------------------------


async def test_renew_issues_a_certificate_for_the_csr_key() -> None:
    csr, key = ec_csr("a-1")
    async with sim_and_client() as (sim, client):
        issued = await client.renew_certificate(
            asset("a-1"), cert_sn=1001, csr=csr, valid_day=220, issue_authority="ECC"
        )
        records = await client.list_certificates(asset("a-1"))
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(issued.ca_pem.encode())
    cert.verify_directly_issued_by(ca)
    assert spki(cert.public_key()) == spki(key.public_key())
    assert str(cert.serial_number) == issued.cert_sn != "1001"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=220)
    assert issued.issue_authority == "ECC"
    assert issued.cert_chain_url is not None and issued.cert_chain_url.endswith("/ECC")
    assert issued.request_id
    assert sim.device("a-1").renewals == 1
    by_serial = {record.cert_sn: record.status for record in records}
    assert by_serial == {"1001": "revoked", issued.cert_sn: "valid"}


async def test_renew_accepts_the_documented_sample_csr() -> None:
    async with sim_and_client() as (_, client):
        issued = await client.renew_certificate(asset("a-2"), cert_sn=1002, csr=SAMPLE_CSR)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "MRmIyzPW"
    assert issued.issue_authority == "RSA"


async def test_renew_without_csr_reissues_and_device_by_product_and_device_key() -> None:
    device = Device(row=2, org_id=ORG, cert_sn=2001, product_key="pk-1", device_key="dk-1")
    async with sim_and_client() as (sim, client):
        issued = await client.renew_certificate(device, cert_sn=2001)
        assert sim.device("pk-1/dk-1").renewals == 1
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    # No validDay: the documented default of 730 days.
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=730)


@pytest.mark.parametrize(
    ("params_in", "gateway_reads"),
    [
        ("both", "body"),  # the default request on a cloud gateway
        ("both", "query"),  # the default request on an Edge gateway
        ("both", "both"),
        ("query", "query"),
        ("query", "both"),
        ("body", "body"),
        ("body", "both"),
    ],
)
async def test_renew_works_where_the_gateway_reads_what_is_sent(
    params_in: str, gateway_reads: str
) -> None:
    csr, _ = ec_csr("a-3")
    client_kw = {"params_in": params_in}
    async with sim_and_client(client_kw=client_kw, param_placement=gateway_reads) as (sim, client):
        issued = await client.renew_certificate(
            asset("a-3"), cert_sn=1003, csr=csr, valid_day=45, issue_authority="ECC"
        )
        assert sim.device("a-3").renewals == 1
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    # validDay (and the ECC authority the CSR needs) were read from the strict gateway's place
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=45)
    assert issued.issue_authority == "ECC"


@pytest.mark.parametrize(("params_in", "gateway_reads"), [("query", "body"), ("body", "query")])
async def test_renew_fails_where_the_gateway_does_not_read_what_is_sent(
    params_in: str, gateway_reads: str
) -> None:
    """The simulator is strict: a request shape that one gateway kind ignores fails there."""
    client_kw = {"params_in": params_in}
    async with sim_and_client(client_kw=client_kw, param_placement=gateway_reads) as (sim, client):
        with pytest.raises(ApiError) as caught:
            await client.renew_certificate(asset("a-3"), cert_sn=1003, valid_day=45)
        assert sim.device("a-3").renewals == 0
    assert caught.value.code == 99400
    assert caught.value.message == "Invalid Argument certSn:certSn is missing"


# -- validity rules ---------------------------------------------------------------------------


async def test_validity_beyond_the_product_maximum_is_99400() -> None:
    async with sim_and_client(product_max_days=365) as (sim, client):
        with pytest.raises(ApiError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001, valid_day=366)
        issued = await client.renew_certificate(asset("a-1"), cert_sn=1001, valid_day=365)
        assert sim.device("a-1").renewals == 1
    assert caught.value.code == 99400
    assert "exceeds the maximum certificate validity" in caught.value.message
    assert classify(caught.value) is ErrorClass.INVALID_REQUEST
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=365)


async def test_validity_beyond_the_ca_lifetime_is_clamped_to_the_ca() -> None:
    async with sim_and_client(ca_days=100) as (_, client):
        issued = await client.renew_certificate(asset("a-1"), cert_sn=1001, valid_day=200)
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(issued.ca_pem.encode())
    assert cert.not_valid_after_utc == ca.not_valid_after_utc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=101)


# -- renew: documented errors -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    device: Device
    cert_sn: int
    code: int
    text: str
    cls: ErrorClass
    csr: str | None = None
    issue_authority: str | None = None


def _rsa_1024_csr() -> str:
    return certs.csr_pem(certs.new_key("RSA", bits=1024), certs.name("a-1"))


ERROR_CASES = {
    "identifier invalid": Case(
        Device(row=2, org_id=ORG, cert_sn=2001, product_key="pk-1"),
        2001,
        99400,
        "device identifier is invalid",
        ErrorClass.INVALID_REQUEST,
    ),
    "certSn negative": Case(
        asset("a-1"), -5, 99400, "invalid (less than 0)", ErrorClass.INVALID_REQUEST
    ),
    "cert not in the device's list": Case(
        asset("a-1"), 987654, 99400, "does not have the certificate", ErrorClass.INVALID_REQUEST
    ),
    "revoked original": Case(
        asset("a-revoked"), 3001, 99400, "has been revoked", ErrorClass.CERT_REVOKED
    ),
    "expired original": Case(
        asset("a-expired"), 3002, 99400, "has expired", ErrorClass.CERT_EXPIRED
    ),
    "product without certificate auth": Case(
        asset("a-noauth"), 3004, 99400, "bi-directional authorization", ErrorClass.INVALID_REQUEST
    ),
    "unknown issue authority": Case(
        asset("a-1"), 1001, 99400, "issueAuthority", ErrorClass.INVALID_REQUEST, None, "DSA"
    ),
    "CSR key does not fit the authority": Case(
        asset("a-1"), 1001, 99400, "Invalid cert request!", ErrorClass.INVALID_REQUEST, "rsa1024"
    ),
    "device not found": Case(
        asset("a-absent"), 3005, 11404, "Device cannot be found", ErrorClass.DEVICE_NOT_FOUND
    ),
    "certificate of another device": Case(
        asset("a-1"), 1002, 11833, "bound to another device", ErrorClass.CERT_BOUND_TO_OTHER_DEVICE
    ),
    "internal error": Case(
        asset("a-flaky"), 3003, 99500, "Internal error", ErrorClass.SERVER_ERROR
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_documented_renew_errors_reach_the_caller_typed(case: Case) -> None:
    csr = _rsa_1024_csr() if case.csr == "rsa1024" else case.csr
    async with sim_and_client() as (sim, client):
        with pytest.raises(ApiError) as caught:
            await client.renew_certificate(
                case.device, cert_sn=case.cert_sn, csr=csr, issue_authority=case.issue_authority
            )
        assert all(device.renewals == 0 for device in sim.fleet.devices.values())
    error = caught.value
    assert (error.code, error.http_status) == (case.code, 200)
    assert case.text in error.message
    assert error.request_id
    assert classify(error) is case.cls
    assert is_retryable(classify(error)) is (case.cls is ErrorClass.SERVER_ERROR)


async def test_flaky_device_renews_on_the_second_attempt() -> None:
    async with sim_and_client() as (sim, client):
        with pytest.raises(ApiError):
            await client.renew_certificate(asset("a-flaky"), cert_sn=3003)
        issued = await client.renew_certificate(asset("a-flaky"), cert_sn=3003)
        assert sim.device("a-flaky").renewals == 1
    assert issued.cert_sn != "3003"


async def test_renewing_a_superseded_certificate_again_fails_as_revoked() -> None:
    async with sim_and_client() as (sim, client):
        await client.renew_certificate(asset("a-1"), cert_sn=1001)
        with pytest.raises(ApiError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.device("a-1").renewals == 1
    assert classify(caught.value) is ErrorClass.CERT_REVOKED


async def test_injected_99500_is_a_retryable_server_error() -> None:
    async with sim_and_client(fail_rate=1.0) as (sim, client):
        with pytest.raises(ApiError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.device("a-1").renewals == 0
    assert caught.value.code == 99500
    assert is_retryable(classify(caught.value))


# -- apply, revoke, list ----------------------------------------------------------------------


async def test_apply_then_revoke_then_list() -> None:
    csr, key = ec_csr("a-2-second")
    async with sim_and_client(client_kw={"params_in": "body"}) as (_, client):
        issued = await client.apply_certificate(
            asset("a-2"), csr=csr, valid_day=30, issue_authority="ECC"
        )
        await client.revoke_certificate(asset("a-2"), cert_sn=int(issued.cert_sn), reason=4)
        records = await client.list_certificates(asset("a-2"))
        with pytest.raises(ApiError) as again:
            await client.revoke_certificate(asset("a-2"), cert_sn=int(issued.cert_sn))
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert spki(cert.public_key()) == spki(key.public_key())
    statuses = {record.cert_sn: record.status for record in records}
    assert statuses == {"1002": "valid", issued.cert_sn: "revoked"}
    assert classify(again.value) is ErrorClass.CERT_REVOKED


async def test_apply_without_csr_is_99400() -> None:
    async with sim_and_client() as (_, client):
        with pytest.raises(ApiError) as caught:
            await client.apply_certificate(asset("a-1"), csr="")
    assert (caught.value.code, caught.value.message) == (
        99400,
        "Invalid Argument csr:csr is missing",
    )


@pytest.mark.parametrize("with_pem", [False, True])
async def test_list_gives_statuses_dates_and_pem_only_when_sent(with_pem: bool) -> None:
    async with sim_and_client(list_includes_pem=with_pem) as (_, client):
        expired = await client.list_certificates(asset("a-expired"))
        [record] = await client.list_certificates(asset("a-1"))
    assert [r.status for r in expired] == ["expired"]
    assert record.cert_sn == "1001" and record.status == "valid"
    assert record.sign_date is not None and record.expire_date is not None
    assert record.sign_date.tzinfo is UTC and record.sign_date < record.expire_date
    assert record.expire_date > datetime.now(UTC)
    assert record.subject is not None and "CN=a-1" in record.subject
    assert record.issuer is not None and "EnOS" in record.issuer
    if with_pem:
        assert record.cert_pem is not None
        cert = x509.load_pem_x509_certificate(record.cert_pem.encode())
        assert cert.serial_number == 1001
    else:
        assert record.cert_pem is None


# -- token service ----------------------------------------------------------------------------


async def test_token_is_fetched_once_and_refreshed_before_expiry() -> None:
    clock = MovableClock()
    async with sim_and_client(clock=clock, token_ttl=100) as (sim, client):
        await client.list_certificates(asset("a-1"))
        clock.advance(50)
        await client.list_certificates(asset("a-1"))
        assert (sim.stats.requests["token/get"], sim.stats.requests["token/refresh"]) == (1, 0)
        clock.advance(45)  # 5 s left of 100: inside the 10 % margin
        await client.list_certificates(asset("a-1"))
        assert (sim.stats.requests["token/get"], sim.stats.requests["token/refresh"]) == (1, 1)
        clock.advance(500)  # long past expiry: a new token is got, not refreshed
        await client.list_certificates(asset("a-1"))
        assert (sim.stats.requests["token/get"], sim.stats.requests["token/refresh"]) == (2, 1)
        assert sim.stats.requests["list"] == 4


async def test_expired_token_answer_refreshes_once_and_retries_once() -> None:
    async with sim_and_client() as (sim, client):
        await client.list_certificates(asset("a-1"))
        sim.expire_token()
        issued = await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.stats.requests["token/refresh"] == 1
        assert sim.stats.requests["renew"] == 2  # refused with 1203, then retried
        assert sim.device("a-1").renewals == 1
    assert issued.cert_sn


async def test_concurrent_workers_share_one_token_request() -> None:
    async with sim_and_client() as (sim, client):
        results = await asyncio.gather(
            *(client.list_certificates(asset(f"a-{1 + i % 3}")) for i in range(30))
        )
        assert sim.stats.requests["token/get"] == 1
        assert sim.stats.requests["list"] == 30
    assert all(len(records) == 1 for records in results)


@pytest.mark.parametrize("single_token", [False, True])
async def test_a_token_replaced_by_another_process_is_cured_by_a_fresh_one(
    single_token: bool,
) -> None:
    """Two clients on one app key, as two shards: the other's token call kills ours.

    Documented gateway: get hands both the one token and the other's refresh replaces it.
    Single-token gateway (a guess): the other's get alone replaces it.
    """
    async with sim_and_client(single_token=single_token) as (sim, ours):
        await ours.list_certificates(asset("a-1"))
        async with EnosClient(config(sim.url)) as theirs:
            their_token = await theirs.tokens.token()
            if not single_token:
                await theirs.tokens.expired(their_token)  # as after a 1203 of their own
            issued = await ours.renew_certificate(asset("a-1"), cert_sn=1001)
            await theirs.list_certificates(asset("a-2"))  # and they carry on too
        assert sim.device("a-1").renewals == 1
        assert sim.stats.requests["renew"] == 2  # refused with 401, then retried once
        # one get at the start, one fresh get after the 401 (asked again if it met theirs in
        # the same millisecond: a replay, 1001)
        assert ours.tokens.requests - ours.tokens.replays == 2
    assert issued.cert_sn


async def test_two_processes_asking_for_a_token_in_the_same_millisecond_both_get_one() -> None:
    """The encryption hashes appKey + timestamp + secret only: the second ask is a replay (1001).

    Both clients read one frozen clock, as two shards starting together would; the second is
    refused 1001 and asks again a few milliseconds on, instead of failing its first device.
    """
    clock = MovableClock()
    async with (
        simulator(clock) as sim, EnosClient(config(sim.url), clock=clock) as first,
        EnosClient(config(sim.url), clock=clock) as second,
    ):
        await first.list_certificates(asset("a-1"))
        await second.list_certificates(asset("a-2"))
        assert first.tokens.requests == 1
        assert second.tokens.requests == 2  # refused as a replay once, then granted
        assert second.tokens.replays == 1


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"app_key": "unknown-app"}, 1002), ({"app_secret": "wrong-secret"}, 1003)],
)
async def test_refused_credentials_are_auth_errors(overrides: dict[str, str], code: int) -> None:
    async with simulator() as sim, EnosClient(config(sim.url, **overrides)) as client:
        with pytest.raises(AuthError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.stats.requests["renew"] == 0
    assert caught.value.code == code
    assert classify(caught.value) is ErrorClass.AUTH


# -- gateway and transport faults -------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [None, 2.5])
async def test_rate_limit_is_throttled_error_with_retry_after(retry_after: float | None) -> None:
    async with sim_and_client(rate_limit=1, retry_after=retry_after) as (sim, client):
        await client.list_certificates(asset("a-1"))
        with pytest.raises(ThrottledError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.device("a-1").renewals == 0
    assert caught.value.http_status == 429
    assert caught.value.retry_after == retry_after
    assert "API rate limit exceeded" in caught.value.message
    assert classify(caught.value) is ErrorClass.THROTTLED


async def test_dropped_connection_is_network_error_sent_without_effect() -> None:
    async with sim_and_client(drop_rate=1.0) as (sim, client):
        with pytest.raises(NetworkError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        assert sim.stats.faults["drop"] == 1
        assert sim.device("a-1").renewals == 0
    # The request reached the server before it hung up: from the client's side it may have
    # taken effect, which is what `sent` reports.
    assert caught.value.sent is True
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert classify(caught.value) is ErrorClass.NETWORK


async def test_lost_answer_is_network_error_sent_and_the_renewal_happened() -> None:
    async with sim_and_client(lost_rate=1.0) as (sim, client):
        with pytest.raises(NetworkError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
        device = sim.device("a-1")
        assert device.renewals == 1 and len(device.certificates) == 2
    assert caught.value.sent is True


async def test_slow_answer_is_a_timeout_after_sending() -> None:
    async with sim_and_client(latency_ms=600, client_kw={"timeout_s": 0.2}) as (_, client):
        with pytest.raises(RequestTimeout) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
    assert caught.value.sent is True
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert classify(caught.value) is ErrorClass.TIMEOUT


async def test_timeout_while_waiting_for_a_pooled_connection_is_not_sent() -> None:
    client_kw = {"timeout_s": 0.3, "connector_limit": 1}
    async with sim_and_client(latency_ms=600, client_kw=client_kw) as (sim, client):
        outcomes = await asyncio.gather(
            client.list_certificates(asset("a-1")),
            client.list_certificates(asset("a-2")),
            return_exceptions=True,
        )
        assert sim.stats.requests["list"] == 1  # the second never left
    assert all(isinstance(outcome, RequestTimeout) for outcome in outcomes)
    assert sorted(outcome.sent for outcome in outcomes if isinstance(outcome, RequestTimeout)) == [
        False,
        True,
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_connection_refused_is_a_token_service_failure_never_uncertain() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    async with EnosClient(config(url)) as client:
        with pytest.raises(TokenServiceError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1001)
    assert classify(caught.value) is ErrorClass.TOKEN_SERVICE
    assert not may_have_taken_effect(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, NetworkError) and cause.sent is False
    assert isinstance(cause.__cause__, aiohttp.ClientConnectorError)


# -- a scripted gateway, for answers the simulator never gives --------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Gateway:
    """Records every request; answers tokens (spelled `stauts`) and then scripted replies."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[web.Response] = field(default_factory=list)
    token_reply: web.Response | None = None

    def business(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/connect-service")]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if request.path.startswith("/apim-token-service"):
            if self.token_reply is not None:
                return self.token_reply
            issued = sum(s.path.startswith("/apim-token-service") for s in self.seen)
            data = {"accessToken": f"gw-token-{issued}", "expire": 7200}
            return web.json_response({"stauts": 0, "msg": "SUCCESS", "data": data})
        return self.replies.pop(0) if self.replies else ok({})


def ok(data: object) -> web.Response:
    return web.json_response({"code": 0, "msg": "OK", "requestId": "req-1", "data": data})


ISSUED = {"cert": "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n", "caCert": "CA"}


@asynccontextmanager
async def gateway(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gw.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        gw.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
        yield gw
    finally:
        await runner.cleanup()


@asynccontextmanager
async def gateway_client(**overrides: Any) -> AsyncIterator[tuple[Gateway, EnosClient]]:
    clock = overrides.pop("clock", time.time)
    async with gateway() as gw, EnosClient(config(gw.url, **overrides), clock=clock) as client:
        yield gw, client


# The query of a renew of asset a-1's 52770 for 220 days by RSA, parameters in the query.
RENEW_QUERY = {
    "action": "renew",
    "orgId": ORG,
    "assetId": "a-1",
    "certSn": "52770",
    "validDay": "220",
    "issueAuthority": "RSA",
}


def check_signature(seen: Seen, token: str) -> None:
    """The gateway's view: the signature covers exactly the query and body bytes received."""
    timestamp = int(seen.headers["apim-timestamp"])
    assert seen.headers["apim-accesstoken"] == token
    assert seen.headers["apim-signature"] == sign(
        token, seen.query, seen.body, timestamp, APP_SECRET
    )


async def test_query_mode_signs_and_sends_certsn_and_validday_in_the_query() -> None:
    async with gateway_client(params_in="query") as (gw, client):
        gw.replies.append(ok(ISSUED | {"certSn": 52771}))
        issued = await client.renew_certificate(
            asset("a-1"), cert_sn=52770, csr="CSR-PEM\né", valid_day=220, issue_authority="RSA"
        )
    [seen] = gw.business()
    assert seen.method == "POST" and seen.path == "/connect-service/v2.0/certificates"
    assert seen.query == RENEW_QUERY
    assert json.loads(seen.body) == {"csr": "CSR-PEM\né"}
    assert seen.headers["Content-Type"] == "application/json;charset=UTF-8"
    check_signature(seen, "gw-token-1")
    assert (issued.cert_sn, issued.ca_pem, issued.request_id) == ("52771", "CA", "req-1")


async def test_body_mode_sends_certsn_as_a_json_number_in_the_body() -> None:
    async with gateway_client(params_in="body") as (gw, client):
        gw.replies.append(ok(ISSUED | {"certSN": "52771"}))
        await client.renew_certificate(asset("a-1"), cert_sn=52770, valid_day=220)
    [seen] = gw.business()
    assert seen.query == {"action": "renew", "orgId": ORG, "assetId": "a-1"}
    assert json.loads(seen.body) == {"certSn": 52770, "validDay": 220}
    check_signature(seen, "gw-token-1")


async def test_default_mode_sends_the_parameters_in_the_body_and_the_query_signed() -> None:
    async with gateway_client() as (gw, client):
        gw.replies.append(ok(ISSUED | {"certSN": "52771"}))
        await client.renew_certificate(
            asset("a-1"), cert_sn=52770, csr="CSR-PEM\né", valid_day=220, issue_authority="RSA"
        )
    [seen] = gw.business()
    assert seen.query == RENEW_QUERY
    body = {"csr": "CSR-PEM\né", "certSn": 52770, "validDay": 220, "issueAuthority": "RSA"}
    assert json.loads(seen.body) == body
    check_signature(seen, "gw-token-1")


async def test_list_is_a_signed_get_with_an_empty_body() -> None:
    item = {"certSN": "52725", "cert": "52725", "certStatus": 1, "effetiveDate": 1581216505000}
    async with gateway_client() as (gw, client):
        gw.replies.append(ok([item]))
        [record] = await client.list_certificates(
            Device(row=2, org_id=ORG, cert_sn=1, product_key="pk", device_key="dk")
        )
    [seen] = gw.business()
    assert (seen.method, seen.body) == ("GET", b"")
    assert seen.query == {"action": "list", "orgId": ORG, "productKey": "pk", "deviceKey": "dk"}
    check_signature(seen, "gw-token-1")
    assert (record.cert_sn, record.status, record.cert_pem) == ("52725", "revoked", None)
    assert record.sign_date == datetime(2020, 2, 9, 2, 48, 25, tzinfo=UTC)


async def test_identifiers_with_reserved_characters_are_signed_as_received() -> None:
    odd = "a b+c&d=e/é%20"
    async with gateway_client() as (gw, client):
        gw.replies.append(ok([]))
        await client.list_certificates(asset(odd))
    [seen] = gw.business()
    assert seen.query["assetId"] == odd
    check_signature(seen, "gw-token-1")


async def test_revoke_sends_certsn_and_reason_in_the_body() -> None:
    async with gateway_client() as (gw, client):
        gw.replies.append(ok(None))
        await client.revoke_certificate(asset("a-1"), cert_sn=52739, reason=1)
    [seen] = gw.business()
    assert seen.query == {"action": "revoke", "orgId": ORG, "assetId": "a-1"}
    assert json.loads(seen.body) == {"certSn": 52739, "reason": 1}


async def test_token_expired_twice_is_token_rejected_after_one_refresh() -> None:
    expired = {"status": 1203, "msg": "access token has expired"}
    async with gateway_client() as (gw, client):
        gw.replies += [web.json_response(expired, status=401) for _ in range(2)]
        with pytest.raises(TokenRejected) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1)
    assert [s.path.rsplit("/", 1)[-1] for s in gw.seen] == [
        "get",
        "certificates",
        "refresh",
        "certificates",
    ]
    assert json.loads(gw.seen[2].body)["accessToken"] == "gw-token-1"
    check_signature(gw.seen[3], "gw-token-2")
    assert (caught.value.code, caught.value.http_status) == (1203, 401)
    assert classify(caught.value) is ErrorClass.TOKEN_REJECTED and is_retryable(
        ErrorClass.TOKEN_REJECTED
    )


async def test_other_401_gets_a_fresh_token_and_retries_once() -> None:
    refused = {"message": "Invalid authentication credentials"}
    async with gateway_client() as (gw, client):
        gw.replies += [web.json_response(refused, status=401), ok([])]
        assert await client.list_certificates(asset("a-1")) == []
    assert [s.path.rsplit("/", 1)[-1] for s in gw.seen] == [
        "get",
        "certificates",
        "get",
        "certificates",
    ]
    check_signature(gw.seen[3], "gw-token-2")  # the retry went with the fresh token


async def test_other_401_twice_is_token_rejected() -> None:
    refused = {"message": "Invalid authentication credentials"}
    async with gateway_client() as (gw, client):
        gw.replies += [web.json_response(refused, status=401) for _ in range(2)]
        with pytest.raises(TokenRejected) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1)
    assert len(gw.seen) == 4  # token get, the call, a fresh get, the one retry
    assert caught.value.http_status == 401 and caught.value.code is None
    assert "Invalid authentication credentials" in caught.value.message


async def test_retry_after_as_an_http_date_is_read_against_the_clock() -> None:
    clock = MovableClock()
    when = format_datetime(datetime.fromtimestamp(int(clock.now) + 30, UTC), usegmt=True)
    throttled = web.json_response(
        {"message": "API rate limit exceeded"}, status=429, headers={"Retry-After": when}
    )
    async with gateway_client(clock=clock) as (gw, client):
        gw.replies.append(throttled)
        with pytest.raises(ThrottledError) as caught:
            await client.list_certificates(asset("a-1"))
    assert caught.value.retry_after == pytest.approx(30, abs=1)


@pytest.mark.parametrize(
    ("reply", "cls", "status"),
    [
        (web.Response(status=502, text="<html>Bad Gateway</html>"), ErrorClass.SERVER_ERROR, 502),
        (
            web.json_response({"message": "Your IP address is not allowed"}, status=403),
            ErrorClass.PERMISSION_DENIED,
            403,
        ),
        (
            web.json_response({"message": "Request size limit exceeded"}, status=413),
            ErrorClass.INVALID_REQUEST,
            413,
        ),
    ],
)
async def test_other_http_statuses_are_gateway_errors(
    reply: web.Response, cls: ErrorClass, status: int
) -> None:
    async with gateway_client() as (gw, client):
        gw.replies.append(reply)
        with pytest.raises(GatewayError) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1)
    assert not isinstance(caught.value, ThrottledError)
    assert caught.value.http_status == status
    assert classify(caught.value) is cls


@pytest.mark.parametrize(
    "reply",
    [
        web.Response(status=200, text="<html>maintenance</html>", content_type="text/html"),
        web.json_response(["not", "an", "envelope"]),
        web.json_response({"msg": "OK", "data": {}}),
        web.json_response({"code": 0, "msg": "OK", "requestId": "r-9"}),
        ok({"cert": "PEM", "certSN": "5"}),  # no caCert
        ok({"caCert": "CA", "certSN": "5"}),  # no cert
        ok({"cert": "PEM", "caCert": "CA"}),  # no serial
        ok("a string"),
    ],
)
async def test_malformed_answers_are_malformed_response(reply: web.Response) -> None:
    async with gateway_client() as (gw, client):
        gw.replies.append(reply)
        with pytest.raises(MalformedResponse) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1)
    assert classify(caught.value) is ErrorClass.MALFORMED_RESPONSE


async def test_malformed_list_entry_is_malformed_response() -> None:
    async with gateway_client() as (gw, client):
        gw.replies.append(ok([{"certSN": "1", "certStatus": 7}]))
        with pytest.raises(MalformedResponse):
            await client.list_certificates(asset("a-1"))


HUGE = b"x" * (8 * 1024 * 1024)


@pytest.mark.parametrize(
    ("token_reply", "error", "cls"),
    [
        (web.Response(status=200, text="not json"), TokenServiceError, ErrorClass.TOKEN_SERVICE),
        (
            web.Response(status=502, text="<html>oops</html>"),
            TokenServiceError,
            ErrorClass.TOKEN_SERVICE,
        ),
        (web.Response(status=200, body=HUGE), TokenServiceError, ErrorClass.TOKEN_SERVICE),
        (
            web.json_response({"message": "API rate limit exceeded"}, status=429),
            TokenServiceError,
            ErrorClass.TOKEN_SERVICE,
        ),
        (
            web.json_response({"status": 1005, "msg": "internal service exception"}),
            TokenServiceError,
            ErrorClass.TOKEN_SERVICE,
        ),
        (
            web.json_response({"status": 1002, "msg": "appKey does not exist"}),
            AuthError,
            ErrorClass.AUTH,
        ),
    ],
)
async def test_token_service_failures_are_typed_and_never_uncertain(
    token_reply: web.Response, error: type[Exception], cls: ErrorClass
) -> None:
    async with gateway_client() as (gw, client):
        gw.token_reply = token_reply
        with pytest.raises(error) as caught:
            await client.renew_certificate(asset("a-1"), cert_sn=1)
        assert gw.business() == []
    assert isinstance(caught.value, EnosError) and classify(caught.value) is cls
    assert not may_have_taken_effect(caught.value)  # no renew left: nothing to reconcile


# -- TLS --------------------------------------------------------------------------------------


async def test_https_gateway_works_with_its_ca_bundle(
    tls_ca: trustme.CA, server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(bundle))
    async with gateway(server_tls) as gw:
        gw.replies.append(ok([]))
        async with EnosClient(config(gw.url, ca_bundle=str(bundle))) as client:
            assert await client.list_certificates(asset("a-1")) == []
    assert len(gw.business()) == 1


async def test_https_gateway_fails_verification_without_its_ca(server_tls: ssl.SSLContext) -> None:
    async with gateway(server_tls) as gw, EnosClient(config(gw.url)) as client:
        with pytest.raises(TokenServiceError) as caught:  # the token is the first thing asked
            await client.list_certificates(asset("a-1"))
        assert gw.seen == []
    assert "TLS verification failed" in caught.value.message
    cause = caught.value.__cause__
    assert isinstance(cause, NetworkError) and cause.sent is False
    assert isinstance(cause.__cause__, aiohttp.ClientConnectorCertificateError)


# -- configuration and secrets ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_url": "ftp://enos.example"},
        {"base_url": "enos.example"},
        {"base_url": "https://enos.example/?x=1"},
        {"base_url": "https://user:s3cret@enos.example"},
        {"app_key": ""},
        {"app_secret": ""},
        {"params_in": "header"},
        {"timeout_s": 0},
        {"connect_timeout_s": -1},
        {"ca_bundle": "/nonexistent/ca.pem"},
    ],
)
def test_bad_configuration_is_a_usage_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        config("https://apim-enos.example", **overrides)


def test_config_normalises_the_url_and_hides_the_secret() -> None:
    cfg = config("https://apim-enos.example/")
    assert cfg.base_url == "https://apim-enos.example"
    assert APP_SECRET not in repr(cfg) and APP_SECRET not in str(cfg)


@pytest.fixture
def caplog_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="batch"):
        yield caplog


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://apim-edge.example:8080", True),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("https://apim-enos.example", False),
    ],
)
async def test_plain_http_to_a_remote_host_is_warned_about(
    url: str, warned: bool, caplog_debug: pytest.LogCaptureFixture
) -> None:
    async with EnosClient(config(url)):
        pass
    warnings = [r for r in caplog_debug.records if r.levelno >= logging.WARNING]
    assert bool(warnings) is warned


async def test_logs_never_carry_secret_token_signature_or_csr(
    caplog_debug: pytest.LogCaptureFixture,
) -> None:
    csr, _ = ec_csr("a-1")
    async with sim_and_client() as (sim, client):
        await client.list_certificates(asset("a-1"))
        sim.expire_token()
        await client.renew_certificate(asset("a-1"), cert_sn=1001, csr=csr, issue_authority="ECC")
        token = await client.tokens.token()
    text = caplog_debug.text
    assert "renew a-1" in text  # the debug log is there, and names the device
    csr_body = csr.splitlines()[1]
    for secret in (APP_SECRET, token, csr_body):
        assert secret not in text
    assert "apim-signature" not in text
