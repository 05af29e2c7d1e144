"""The simulator's token service, gateway checks and certificate API, over real loopback HTTP."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from batch.enos import sign, token_encryption
from batch.model import ParamPlacement
from batch.simulator import RunningSimulator, SimulatorConfig
from batch.simulator.ca import public_key_sha256
from batch.simulator.certificates import MSG_VALIDITY_TOO_LONG
from tests import certs
from tests.conftest import SIM_ORG, MovableClock, RawEnos, raw_simulator

REFERENCE = Path("/work/shared/reference/renew-certificate.txt")
ASSET_1 = {"assetId": "asset-1"}

# -- keys and CSRs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> certs.PrivateKey:
    return certs.new_key("RSA")


@pytest.fixture(scope="module")
def ec_key() -> certs.PrivateKey:
    return certs.new_key("EC")


def make_csr(
    key: certs.PrivateKey,
    cn: str = "asset-1",
    algorithm: certs.SigningHash | None = None,
    *,
    new_header: bool = False,
) -> str:
    text = certs.csr_pem(key, certs.name(cn), algorithm)
    return text.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST") if new_header else text


def sample_csr() -> str:
    """The CSR of the documented Java sample (header NEW CERTIFICATE REQUEST)."""
    text = REFERENCE.read_text()
    begin = text.index("-----BEGIN NEW CERTIFICATE REQUEST-----")
    end = text.index("-----END NEW CERTIFICATE REQUEST-----", begin)
    block = text[begin : end + len("-----END NEW CERTIFICATE REQUEST-----")]
    lines = re.findall(r"-----[A-Z ]+-----|[A-Za-z0-9+/=]{4,}", block.replace("\\n", "\n"))
    return "\n".join(lines) + "\n"


def cert_of(answer_data: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(str(answer_data["cert"]).encode())


def assert_error(answer: Any, code: int, msg: str | None = None) -> None:
    assert answer.status == 200
    assert answer.body["code"] == code, answer.body
    assert answer.body["data"] is None
    assert re.fullmatch(r"[0-9a-f-]{36}", answer.body["requestId"])
    if msg is not None:
        assert answer.body["msg"] == msg


# -- token service ----------------------------------------------------------------------------


async def test_token_get_returns_the_same_token_while_valid(raw_enos: RawEnos) -> None:
    first = await raw_enos.token_call("get", raw_enos.token_body())
    assert first["status"] == 0 and first["msg"] == "SUCCESS"
    assert first["business"] == "apim-token-service"
    assert first["data"]["expire"] == 7200
    cfg = raw_enos.sim.config
    ts = raw_enos._ms() + 1  # a different timestamp: the same encryption twice is a replay
    body = raw_enos.token_body(timestamp=ts, encryption=_enc(cfg.app_key, ts, cfg.app_secret))
    again = await raw_enos.token_call("get", body)
    assert again["status"] == 0
    assert again["data"]["accessToken"] == first["data"]["accessToken"]


def _enc(key: str, ts: int, secret: str) -> str:
    return token_encryption(key, ts, secret)


async def test_token_get_accepts_a_string_timestamp(raw_enos: RawEnos) -> None:
    body = raw_enos.token_body()
    body["timestamp"] = str(body["timestamp"])
    answer = await raw_enos.token_call("get", body)
    assert answer["status"] == 0 and answer["data"]["accessToken"]


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"appKey": "someone-else"}, 1002),
        ({"encryption": "0" * 64}, 1003),
        ({"appKey": ""}, 1202),
        ({"timestamp": "yesterday"}, 1004),
    ],
)
async def test_token_get_refuses_bad_requests(
    raw_enos: RawEnos, overrides: dict[str, object], status: int
) -> None:
    answer = await raw_enos.token_call("get", raw_enos.token_body(**overrides))
    assert answer["status"] == status
    assert answer["data"] is None


async def test_token_get_refuses_a_timestamp_far_from_now(raw_enos: RawEnos) -> None:
    ts = raw_enos._ms() - 6 * 60 * 1000
    cfg = raw_enos.sim.config
    body = raw_enos.token_body(timestamp=ts, encryption=_enc(cfg.app_key, ts, cfg.app_secret))
    assert (await raw_enos.token_call("get", body))["status"] == 1003


async def test_token_get_refuses_a_replayed_encryption(raw_enos: RawEnos) -> None:
    body = raw_enos.token_body()
    assert (await raw_enos.token_call("get", body))["status"] == 0
    assert (await raw_enos.token_call("get", body))["status"] == 1001


async def test_refresh_replaces_the_token_and_the_old_one_stops_working(
    raw_enos: RawEnos,
) -> None:
    old = await raw_enos.login()
    answer = await raw_enos.token_call("refresh", raw_enos.token_body(accessToken=old))
    new = answer["data"]["accessToken"]
    assert answer["status"] == 0 and new != old and answer["data"]["expire"] == 7200
    refused = await raw_enos.call("list", {"orgId": SIM_ORG, **ASSET_1}, token=old)
    assert refused.status == 401
    assert refused.body == {"message": "Invalid authentication credentials"}
    accepted = await raw_enos.call("list", {"orgId": SIM_ORG, **ASSET_1}, token=new)
    assert accepted.status == 200 and accepted.body["code"] == 0


async def test_refresh_of_an_unknown_token_is_1204(raw_enos: RawEnos) -> None:
    await raw_enos.login()
    answer = await raw_enos.token_call("refresh", raw_enos.token_body(accessToken="nope"))
    assert answer["status"] == 1204


async def test_an_expired_token_gets_401_with_1203_and_refresh_revives_access(
    sim_config: SimulatorConfig,
) -> None:
    clock = MovableClock()
    async with raw_simulator(dataclasses.replace(sim_config, token_ttl=60), clock=clock) as raw:
        token = await raw.login()
        clock.advance(61)
        expired = await raw.call("list", {"orgId": SIM_ORG, **ASSET_1})
        assert expired.status == 401
        assert expired.body == {"status": 1203, "msg": "access token has expired"}
        refreshed = await raw.token_call("refresh", raw.token_body(accessToken=token))
        assert refreshed["status"] == 0
        raw.token = refreshed["data"]["accessToken"]
        assert (await raw.call("list", {"orgId": SIM_ORG, **ASSET_1})).body["code"] == 0


async def test_token_get_after_expiry_returns_a_new_token(sim_config: SimulatorConfig) -> None:
    clock = MovableClock()
    async with raw_simulator(dataclasses.replace(sim_config, token_ttl=60), clock=clock) as raw:
        first = await raw.login()
        clock.advance(30)
        half = await raw.token_call("get", raw.token_body())
        assert half["data"] == {"accessToken": first, "expire": 30}
        clock.advance(31)
        assert await raw.login() != first


async def test_single_token_mode_get_invalidates_the_previous_token(
    sim_config: SimulatorConfig,
) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, single_token=True)) as raw:
        first = await raw.login()
        assert (await raw.call("list", {"orgId": SIM_ORG, **ASSET_1})).body["code"] == 0
        second = await raw.login()
        assert second != first
        refused = await raw.call("list", {"orgId": SIM_ORG, **ASSET_1}, token=first)
        assert refused.status == 401
        assert refused.body == {"message": "Invalid authentication credentials"}
        accepted = await raw.call("list", {"orgId": SIM_ORG, **ASSET_1}, token=second)
        assert accepted.status == 200 and accepted.body["code"] == 0


# -- gateway: signatures ----------------------------------------------------------------------


async def test_a_correctly_signed_call_passes(raw_enos: RawEnos) -> None:
    answer = await raw_enos.call("list", {"orgId": SIM_ORG, **ASSET_1})
    assert answer.status == 200 and answer.body["code"] == 0 and answer.body["msg"] == "OK"


@pytest.mark.parametrize("fault", ["wrong-secret", "unknown-token", "no-token"])
async def test_bad_credentials_get_401(raw_enos: RawEnos, fault: str) -> None:
    await raw_enos.login()
    params = {"orgId": SIM_ORG, **ASSET_1}
    if fault == "wrong-secret":
        answer = await raw_enos.call("list", params, secret="not-the-secret")
    else:
        answer = await raw_enos.call("list", params, token="" if fault == "no-token" else "x")
    assert answer.status == 401
    assert answer.body == {"message": "Invalid authentication credentials"}


async def test_the_body_is_part_of_the_signature(raw_enos: RawEnos) -> None:
    await raw_enos.login()
    sim = raw_enos.sim
    ts = raw_enos._ms()
    query = {"action": "renew", "orgId": SIM_ORG, "assetId": "asset-1"}
    signed = sign(raw_enos.token or "", query, b'{"certSn":1001}', ts, sim.config.app_secret)
    headers = {
        "apim-accesstoken": raw_enos.token or "",
        "apim-timestamp": str(ts),
        "apim-signature": signed,
    }
    url = f"{sim.url}/connect-service/v2.0/certificates"
    async with raw_enos.session.post(
        url, params=query, data=b'{"certSn":1002}', headers=headers
    ) as response:
        assert response.status == 401
    assert sim.device("asset-1").renewals == 0


# -- renew: documented errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "body", "msg"),
    [
        ({"assetId": "asset-1"}, {"certSn": 1001}, "Invalid Argument orgId:orgId is missing"),
        (
            {"orgId": "o-nowhere", "assetId": "asset-1"},
            {"certSn": 1001},
            "Invalid Argument orgId:  orgId does not exist",
        ),
        (
            {"orgId": SIM_ORG, "productKey": "pk"},
            {"certSn": 1002},
            "invalid argument: The device identifier is invalid",
        ),
        ({"orgId": SIM_ORG, **ASSET_1}, {}, "Invalid Argument certSn:certSn is missing"),
        (
            {"orgId": SIM_ORG, **ASSET_1},
            {"certSn": -5},
            "The serial number of the new certificate is invalid (less than 0).",
        ),
        (
            {"orgId": SIM_ORG, **ASSET_1},
            {"certSn": 1001, "validDay": 3651},
            "The specified validity period exceeds the maximum certificate validity period of "
            "the product to which this device belongs.",
        ),
        (
            {"orgId": SIM_ORG, "assetId": "asset-revoked"},
            {"certSn": 1004},
            "The original certificate has been revoked and cannot be updated.",
        ),
        (
            {"orgId": SIM_ORG, "assetId": "asset-expired"},
            {"certSn": 1003},
            "The original certificate has expired and cannot be updated.",
        ),
        (
            {"orgId": SIM_ORG, **ASSET_1},
            {"certSn": 424242},
            "The certificate list bound to the device does not have the certificate, or the "
            "certificate is bound to other devices.",
        ),
        (
            {"orgId": SIM_ORG, "assetId": "asset-noauth"},
            {"certSn": 1006},
            "The product to which the device belongs to is not a product that supports "
            "bi-directional authorization.",
        ),
    ],
)
async def test_renew_documented_99400_errors(
    raw_enos: RawEnos, params: dict[str, str], body: dict[str, object], msg: str
) -> None:
    answer = await raw_enos.call("renew", params, body)
    assert_error(answer, 99400, msg)
    assert all(d.renewals == 0 for d in raw_enos.sim.fleet.devices.values())


@pytest.mark.parametrize(
    "body",
    [{"certSn": "abc"}, {"certSn": 1001, "validDay": 0}, {"certSn": 1001, "validDay": "x"}],
)
async def test_renew_malformed_numbers_are_99400(
    raw_enos: RawEnos, body: dict[str, object]
) -> None:
    answer = await raw_enos.renew(ASSET_1, **body)
    assert_error(answer, 99400)
    assert answer.body["msg"].startswith(
        "When calling Certificate Services, the call parameters are invalid."
    )


@pytest.mark.parametrize("device", [{"assetId": "nobody"}, {"assetId": "asset-absent"}])
async def test_renew_of_an_unknown_device_is_11404(
    raw_enos: RawEnos, device: dict[str, str]
) -> None:
    assert_error(await raw_enos.renew(device, certSn=1007), 11404, "Device cannot be found")


async def test_renew_with_another_devices_certificate_is_11833(raw_enos: RawEnos) -> None:
    # asset-dup's inventory row named asset-1's serial: it got its own, and 1001 stays asset-1's.
    answer = await raw_enos.renew({"assetId": "asset-dup"}, certSn=1001)
    assert_error(answer, 11833, "Certificate is already bound to another device.")
    assert raw_enos.sim.device("asset-1").certificates[0].serial == 1001


async def test_a_flaky_device_fails_once_with_99500_then_renews(raw_enos: RawEnos) -> None:
    device = {"assetId": "asset-flaky"}
    assert_error(await raw_enos.renew(device, certSn=1005), 99500)
    assert raw_enos.sim.device("asset-flaky").renewals == 0
    again = await raw_enos.renew(device, certSn=1005)
    assert again.body["code"] == 0
    assert raw_enos.sim.device("asset-flaky").renewals == 1


@pytest.mark.parametrize(
    ("key_name", "authority", "algorithm"),
    [
        ("ec", None, None),  # EC key, default authority RSA
        ("rsa", "ECC", None),
        ("rsa", None, hashes.SHA512()),
        ("rsa1024", None, None),
        ("p384", "ECC", None),
    ],
)
async def test_renew_refuses_a_csr_that_does_not_fit_the_authority(
    raw_enos: RawEnos,
    rsa_key: certs.PrivateKey,
    ec_key: certs.PrivateKey,
    key_name: str,
    authority: str | None,
    algorithm: certs.SigningHash | None,
) -> None:
    keys: dict[str, certs.PrivateKey] = {
        "rsa": rsa_key,
        "ec": ec_key,
        "rsa1024": certs.new_key("RSA", bits=1024),
        "p384": certs.new_key("EC", curve=ec.SECP384R1()),
    }
    body: dict[str, object] = {"certSn": 1001, "csr": make_csr(keys[key_name], algorithm=algorithm)}
    if authority:
        body["issueAuthority"] = authority
    answer = await raw_enos.renew(ASSET_1, **body)
    assert_error(answer, 99400)
    assert answer.body["msg"].startswith("Invalid cert request!message: ")
    assert raw_enos.sim.device("asset-1").renewals == 0


async def test_renew_refuses_a_garbage_csr(raw_enos: RawEnos) -> None:
    answer = await raw_enos.renew(ASSET_1, certSn=1001, csr="-----BEGIN CERTIFICATE REQUEST-----")
    assert_error(answer, 99400)
    assert answer.body["msg"].startswith("Invalid cert request!message: ")


async def test_renew_refuses_an_unknown_issue_authority(raw_enos: RawEnos) -> None:
    answer = await raw_enos.renew(ASSET_1, certSn=1001, issueAuthority="DSA")
    assert_error(answer, 99400)
    assert "issueAuthority" in answer.body["msg"]


# -- renew: success, validity, authorities ----------------------------------------------------


async def test_renew_with_rsa_csr_issues_a_real_certificate(
    raw_enos: RawEnos, rsa_key: certs.PrivateKey
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    answer = await raw_enos.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key), validDay=220)
    assert answer.body["code"] == 0 and answer.body["msg"] == "OK"
    data = answer.body["data"]
    assert set(data) == {"certChainURL", "cert", "certSN", "caCert", "issueAuthority"}
    cert, ca = cert_of(data), x509.load_pem_x509_certificate(data["caCert"].encode())
    cert.verify_directly_issued_by(ca)
    assert data["issueAuthority"] == "RSA" and ca.subject.rfc4514_string().startswith("CN=EnOS CA")
    assert str(cert.serial_number) == data["certSN"] != "1001"
    assert cert.public_key() == rsa_key.public_key()
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "asset-1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=220)
    assert before <= cert.not_valid_before_utc <= datetime.now(UTC)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


async def test_renew_with_ecc_csr_is_signed_by_the_ecc_ca(
    raw_enos: RawEnos, ec_key: certs.PrivateKey
) -> None:
    answer = await raw_enos.renew(
        ASSET_1, certSn=1001, csr=make_csr(ec_key, new_header=True), issueAuthority="ecc"
    )
    data = answer.body["data"]
    assert answer.body["code"] == 0 and data["issueAuthority"] == "ECC"
    ca = x509.load_pem_x509_certificate(data["caCert"].encode())
    cert_of(data).verify_directly_issued_by(ca)
    assert "EnOS ECC CA" in ca.subject.rfc4514_string()
    assert data["certChainURL"].endswith("/enos/CA/cacert/ECC")
    async with raw_enos.session.get(data["certChainURL"]) as response:
        assert (await response.text()).strip() == data["caCert"]


async def test_renew_uses_730_days_by_default(raw_enos: RawEnos, rsa_key: certs.PrivateKey) -> None:
    answer = await raw_enos.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key))
    cert = cert_of(answer.body["data"])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=730)


async def test_validity_beyond_the_ca_lifetime_is_clamped_silently(
    sim_config: SimulatorConfig, rsa_key: certs.PrivateKey
) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, ca_days=100)) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key), validDay=200)
        assert answer.body["code"] == 0
        cert = cert_of(answer.body["data"])
        ca = x509.load_pem_x509_certificate(answer.body["data"]["caCert"].encode())
        assert cert.not_valid_after_utc == ca.not_valid_after_utc
        assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=101)


async def test_a_short_product_maximum_refuses_more_and_the_default_above_it(
    sim_config: SimulatorConfig, rsa_key: certs.PrivateKey
) -> None:
    # The seed page: "the specified or default (730) value ... greater than the maximum ...
    # an error message is prompted and the application fails" -- no silent cap.
    async with raw_simulator(dataclasses.replace(sim_config, product_max_days=365)) as raw:
        too_long = await raw.renew(ASSET_1, certSn=1001, validDay=366)
        assert_error(too_long, 99400)
        assert too_long.body["msg"] == MSG_VALIDITY_TOO_LONG  # the documented text, no maximum
        assert_error(await raw.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key)), 99400)
        answer = await raw.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key), validDay=365)
        assert answer.body["code"] == 0
        assert raw.sim.device("asset-1").renewals == 1


async def test_the_deployments_default_validity_applies_without_a_valid_day(
    sim_config: SimulatorConfig, rsa_key: certs.PrivateKey
) -> None:
    config = dataclasses.replace(sim_config, product_max_days=365, default_valid_days=180)
    async with raw_simulator(config) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key))
        cert = cert_of(answer.body["data"])
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=180)


async def test_the_guessed_message_states_the_maximum_only_when_asked(
    sim_config: SimulatorConfig,
) -> None:
    config = dataclasses.replace(sim_config, product_max_days=365, validity_error_states_max=True)
    async with raw_simulator(config) as raw:
        answer = await raw.renew(ASSET_1, certSn=1001, validDay=400)
        assert_error(answer, 99400)
        assert answer.body["msg"] == f"{MSG_VALIDITY_TOO_LONG} (maximum: 365 days)"


async def test_renew_parameters_in_the_query_work_and_the_body_wins(
    raw_enos: RawEnos, rsa_key: certs.PrivateKey
) -> None:
    params = {"orgId": SIM_ORG, "assetId": "asset-1", "certSn": "424242", "validDay": "10"}
    answer = await raw_enos.call("renew", params, {"certSn": 1001, "csr": make_csr(rsa_key)})
    assert answer.body["code"] == 0
    cert = cert_of(answer.body["data"])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=10)
    params = {"orgId": SIM_ORG, "productKey": "pk", "deviceKey": "dk-2", "certSn": "1002"}
    only_query = await raw_enos.call("renew", params)
    assert only_query.body["code"] == 0
    assert raw_enos.sim.device("pk/dk-2").renewals == 1


@pytest.mark.parametrize("placement", [ParamPlacement.BODY, ParamPlacement.QUERY])
async def test_a_strict_gateway_reads_renew_parameters_only_in_its_place(
    sim_config: SimulatorConfig, rsa_key: certs.PrivateKey, placement: ParamPlacement
) -> None:
    device = {"orgId": SIM_ORG, "assetId": "asset-1"}
    csr = {"csr": make_csr(rsa_key)}  # always read from the body

    def request(place: ParamPlacement, **values: int) -> tuple[dict[str, str], dict[str, object]]:
        if place is ParamPlacement.QUERY:
            return {**device, **{k: str(v) for k, v in values.items()}}, csr
        return device, {**csr, **values}

    other = ParamPlacement.QUERY if placement is ParamPlacement.BODY else ParamPlacement.BODY
    strict = dataclasses.replace(sim_config, param_placement=placement)
    async with raw_simulator(strict) as raw:
        answer = await raw.call("renew", *request(other, certSn=1001, validDay=10))
        assert_error(answer, 99400, "Invalid Argument certSn:certSn is missing")
        query, body = request(placement, certSn=1001)
        query = {**query, **request(other, validDay=10)[0]}  # validDay elsewhere: ignored
        body = {**body, **request(other, validDay=10)[1]}
        answer = await raw.call("renew", query, body)
        assert answer.body["code"] == 0, answer.body
        cert = cert_of(answer.body["data"])  # the default validity, not the 10 days sent
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=730)
        assert raw.sim.device("asset-1").renewals == 1


@pytest.mark.parametrize("name", ["certSn", "validDay"])
async def test_an_integer_sent_as_a_string_in_the_body_is_refused(
    sim_config: SimulatorConfig, name: str
) -> None:
    body_only = dataclasses.replace(sim_config, param_placement=ParamPlacement.BODY)
    values: dict[str, object] = {"certSn": 1001, "validDay": 10, name: "10"}
    async with raw_simulator(body_only) as raw:
        answer = await raw.call("renew", {"orgId": SIM_ORG, "assetId": "asset-1"}, values)
        assert_error(answer, 99400)
        assert answer.body["msg"].endswith(f"detail message: {name} must be an integer")
        assert raw.sim.device("asset-1").renewals == 0


async def test_the_documented_sample_csr_is_accepted(raw_enos: RawEnos) -> None:
    pem = sample_csr()
    assert pem.startswith("-----BEGIN NEW CERTIFICATE REQUEST-----")
    sample_key = x509.load_pem_x509_csr(
        pem.replace("NEW CERTIFICATE REQUEST", "CERTIFICATE REQUEST").encode()
    ).public_key()
    assert isinstance(sample_key, rsa.RSAPublicKey) and sample_key.key_size == 2048
    answer = await raw_enos.renew(ASSET_1, certSn=1001, csr=pem, validDay=220)
    assert answer.body["code"] == 0, answer.body
    cert = cert_of(answer.body["data"])
    assert cert.public_key() == sample_key
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "MRmIyzPW"


async def test_renew_without_csr_reuses_the_previous_key_and_subject(raw_enos: RawEnos) -> None:
    sim = raw_enos.sim
    assert sim.state_dict()["devices"]["asset-1"]["certificates"][0]["publicKeySha256"] is None
    first = await raw_enos.renew(ASSET_1, certSn=1001)
    assert first.body["code"] == 0
    cert = cert_of(first.body["data"])
    assert first.body["data"]["issueAuthority"] == "ECC"  # the seeded key is EC P-256
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "asset-1"
    second = await raw_enos.renew(ASSET_1, certSn=int(first.body["data"]["certSN"]))
    assert cert_of(second.body["data"]).public_key() == cert.public_key()
    certs = sim.state_dict()["devices"]["asset-1"]["certificates"]
    key_hash = public_key_sha256(cert.public_key())  # type: ignore[arg-type]
    assert [c["publicKeySha256"] for c in certs] == [key_hash] * 3


# -- supersede, list, revoke, apply ----------------------------------------------------------


async def test_renew_supersedes_the_old_certificate(
    raw_enos: RawEnos, rsa_key: certs.PrivateKey
) -> None:
    answer = await raw_enos.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key))
    new_sn = answer.body["data"]["certSN"]
    listed = {c["certSN"]: c for c in await raw_enos.certificates(ASSET_1)}
    assert listed["1001"]["certStatus"] == 1 and listed["1001"]["revokerReason"] == "SUPERSEDED"
    assert listed[new_sn]["certStatus"] == 0
    again = await raw_enos.renew(ASSET_1, certSn=1001, csr=make_csr(rsa_key))
    assert_error(again, 99400, "The original certificate has been revoked and cannot be updated.")
    state = raw_enos.sim.state_dict()["devices"]["asset-1"]
    assert state["renewals"] == 1
    assert [(c["serial"], c["status"]) for c in state["certificates"]] == [
        ("1001", "revoked"),
        (new_sn, "valid"),
    ]


async def test_list_answers_the_documented_fields_with_the_serial_as_cert(
    raw_enos: RawEnos,
) -> None:
    (entry,) = await raw_enos.certificates({"productKey": "pk", "deviceKey": "dk-2"})
    assert entry["certSN"] == "1002" and entry["cert"] == "1002"
    assert entry["certStatus"] == 0 and entry["isEnosCert"] is True
    assert entry["subject"] == "CN=dk-2, OU=EnOS, O=EnOS, L=Shanghai, ST=Shanghai, C=CN"
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert entry["signDate"] == entry["effectiveDate"] < now_ms < entry["expireDate"]
    assert entry["issuer"].startswith("CN=EnOS") and entry["issueAuthority"] in {"RSA", "ECC"}
    (expired,) = await raw_enos.certificates({"assetId": "asset-expired"})
    assert expired["certStatus"] == 2


async def test_list_can_include_pems(sim_config: SimulatorConfig) -> None:
    async with raw_simulator(dataclasses.replace(sim_config, list_includes_pem=True)) as raw:
        (entry,) = await raw.certificates(ASSET_1)
        cert = x509.load_pem_x509_certificate(entry["cert"].encode())
        assert cert.serial_number == 1001
        assert cert.issuer.rfc4514_string().replace(",", ", ") == entry["issuer"]


async def test_list_of_an_unknown_device_is_11404(raw_enos: RawEnos) -> None:
    answer = await raw_enos.call("list", {"orgId": SIM_ORG, "assetId": "ghost"})
    assert_error(answer, 11404)


async def test_revoke_marks_the_certificate_revoked(raw_enos: RawEnos) -> None:
    answer = await raw_enos.call(
        "revoke", {"orgId": SIM_ORG, **ASSET_1}, {"certSn": 1001, "reason": 1}
    )
    assert answer.body == {**answer.body, "code": 0, "data": None}
    (entry,) = await raw_enos.certificates(ASSET_1)
    assert entry["certStatus"] == 1 and entry["revokerReason"] == "KEY COMPROMISE"
    again = await raw_enos.call("revoke", {"orgId": SIM_ORG, "certSn": "1001", **ASSET_1})
    assert_error(again, 99400, "The original certificate has been revoked and cannot be updated.")
    assert_error(await raw_enos.renew(ASSET_1, certSn=1001), 99400)


async def test_revoke_checks_ownership_and_reason(raw_enos: RawEnos) -> None:
    params = {"orgId": SIM_ORG, "assetId": "asset-dup"}
    assert_error(await raw_enos.call("revoke", params, {"certSn": 1001}), 11833)
    params = {"orgId": SIM_ORG, **ASSET_1}
    assert_error(await raw_enos.call("revoke", params, {"certSn": 1001, "reason": 2}), 99400)
    assert_error(
        await raw_enos.call("revoke", params, {}),
        99400,
        "Invalid Argument certSn:certSn is missing",
    )


async def test_apply_issues_an_additional_certificate(
    raw_enos: RawEnos, ec_key: certs.PrivateKey
) -> None:
    params = {"orgId": SIM_ORG, **ASSET_1}
    missing = await raw_enos.call("apply", params, {"validDay": 30})
    assert_error(missing, 99400, "Invalid Argument csr:csr is missing")
    body = {"csr": make_csr(ec_key), "issueAuthority": "ECC", "validDay": 30}
    answer = await raw_enos.call("apply", params, body)
    assert answer.body["code"] == 0
    cert = cert_of(answer.body["data"])
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    statuses = [c["certStatus"] for c in await raw_enos.certificates(ASSET_1)]
    assert statuses == [0, 0]
    assert raw_enos.sim.device("asset-1").renewals == 0


async def test_apply_refuses_a_subject_used_by_another_device(
    raw_enos: RawEnos, rsa_key: certs.PrivateKey
) -> None:
    params = {"orgId": SIM_ORG, "productKey": "pk", "deviceKey": "dk-2"}
    answer = await raw_enos.call("apply", params, {"csr": make_csr(rsa_key, cn="asset-1")})
    assert_error(answer, 99400)
    assert answer.body["msg"].startswith("Duplicate subject by certificate request!")


# -- malformed calls ------------------------------------------------------------------------


async def test_action_missing_or_wrong_is_99400(raw_enos: RawEnos) -> None:
    params = {"orgId": SIM_ORG, **ASSET_1}
    assert_error(
        await raw_enos.call("", params, method="POST"),
        99400,
        "Invalid Argument action:action is missing",
    )
    assert_error(await raw_enos.call("explode", params, method="POST"), 99400)
    assert_error(await raw_enos.call("renew", params, {"certSn": 1001}, method="GET"), 99400)


async def test_a_body_that_is_not_json_is_http_400(raw_enos: RawEnos) -> None:
    answer = await raw_enos.call("renew", {"orgId": SIM_ORG, **ASSET_1}, b"{not json")
    assert answer.status == 400
    assert answer.body == {"message": "Cannot process request body"}
    assert raw_enos.sim.device("asset-1").renewals == 0


async def test_running_simulator_binds_loopback_and_counts_requests(
    simulator: RunningSimulator, raw_enos: RawEnos
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", simulator.url)
    await raw_enos.certificates(ASSET_1)
    await raw_enos.renew(ASSET_1, certSn=1001)
    stats = simulator.state_dict()["stats"]
    assert stats["requests"] == {"token/get": 1, "list": 1, "renew": 1}
    assert stats["maxInOneSecond"] == 2 and stats["throttled"] == 0
