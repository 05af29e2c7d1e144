"""The signing rules of batch.enos.signing against the documented rule, computed by hand."""

from __future__ import annotations

import hashlib
import json

from hypothesis import assume, given
from hypothesis import strategies as st

from batch.enos import sign, token_encryption

# The renew call of the documented Java sample, with a made-up token and secret.
TOKEN = "tok-123"
SECRET = "secret-xyz"
TIMESTAMP_MS = 1572574909697
PARAMS = {
    "orgId": "o15444172373271",
    "action": "renew",
    "validDay": "220",
    "assetId": "KloXinjW",
    "certSn": "2667",
}
CSR = "-----BEGIN NEW CERTIFICATE REQUEST-----\nMIIC\n-----END NEW CERTIFICATE REQUEST-----"
BODY = (
    b'{"csr":"-----BEGIN NEW CERTIFICATE REQUEST-----'
    b"\\nMIIC\\n"
    b'-----END NEW CERTIFICATE REQUEST-----"}'
)
# token + sorted name/value pairs + raw body + timestamp + secret, written out by hand:
SIGNED_TEXT = "".join(
    [
        "tok-123",
        "actionrenew",
        "assetIdKloXinjW",
        "certSn2667",
        "orgIdo15444172373271",
        "validDay220",
        BODY.decode(),
        "1572574909697",
        "secret-xyz",
    ]
)
# `printf '%s' "$SIGNED_TEXT" | sha256sum`, computed outside Python.
EXPECTED = "ca1f97e86fdb78fd0b0a1361abba50c560c18e0c5896b102ce4ed6db5e9334da"


def test_body_is_the_compact_json_of_the_sample() -> None:
    assert json.dumps({"csr": CSR}, separators=(",", ":")).encode() == BODY


def test_sign_matches_the_documented_rule_for_the_renew_sample() -> None:
    assert hashlib.sha256(SIGNED_TEXT.encode()).hexdigest() == EXPECTED
    assert sign(TOKEN, PARAMS, BODY, TIMESTAMP_MS, SECRET) == EXPECTED


def test_sign_sorts_names_by_ascii_so_uppercase_comes_first() -> None:
    # "Zeta" < "action" < "orgId" in ASCII; a GET has an empty body.
    expected = "8e503017133502096d74288b150cd312ee11699497c7bec8dbe1138be17ff09a"
    params = {"orgId": "o1", "action": "list", "Zeta": "1"}
    assert sign("tok", params, b"", 1000, "s") == expected


def test_sign_does_not_depend_on_mapping_order() -> None:
    reordered = dict(reversed(list(PARAMS.items())))
    assert sign(TOKEN, reordered, BODY, TIMESTAMP_MS, SECRET) == EXPECTED


def test_sign_uses_raw_values_not_url_encoded() -> None:
    params = {"action": "list", "orgId": "o 1/&"}
    text = "tokactionlistorgIdo 1/&" + "1000" + "s"
    assert sign("tok", params, b"", 1000, "s") == hashlib.sha256(text.encode()).hexdigest()


def test_sign_hashes_the_body_bytes_as_sent() -> None:
    utf8 = '{"csr":"é"}'.encode()
    escaped = b'{"csr":"\\u00e9"}'  # the same JSON value, different bytes: a different signature
    assert sign("t", {}, utf8, 1, "s") == hashlib.sha256(b"t" + utf8 + b"1s").hexdigest()
    assert sign("t", {}, utf8, 1, "s") != sign("t", {}, escaped, 1, "s")


def test_token_encryption_matches_the_documented_rule() -> None:
    # The documented Java sample's app key and secret; `printf '%s' ... | sha256sum`.
    app_key = "e36cc693-3a07-456e6cafcbc2-9314-4ff6"
    app_secret = "6cafcbc2-9314-4ff6-9450-861d4344a431"
    expected = "1c6ebef29ead26fb68d5d7867ba980588afb5d6286bd4f78eff468af3dc98c4f"
    assert token_encryption(app_key, 1572574909697, app_secret) == expected


names = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=8)
values = st.text(max_size=12)


@given(
    token=st.text(max_size=20),
    params=st.dictionaries(names, values, max_size=6),
    body=st.binary(max_size=64),
    timestamp=st.integers(min_value=0, max_value=2**42),
    secret=st.text(max_size=20),
)
def test_sign_is_sha256_of_the_concatenation(
    token: str, params: dict[str, str], body: bytes, timestamp: int, secret: str
) -> None:
    pairs = "".join(name + params[name] for name in sorted(params))
    data = (token + pairs).encode() + body + f"{timestamp}{secret}".encode()
    signature = sign(token, params, body, timestamp, secret)
    assert signature == hashlib.sha256(data).hexdigest()
    assert len(signature) == 64 and signature == signature.lower()


@given(body=st.binary(max_size=32), other=st.binary(max_size=32))
def test_any_body_change_changes_the_signature(body: bytes, other: bytes) -> None:
    assume(body != other)
    assert sign("t", {"a": "1"}, body, 5, "s") != sign("t", {"a": "1"}, other, 5, "s")
