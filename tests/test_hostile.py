"""The job as a process against a hostile EnOS (`tests.hostile`): answers that are not HTTP,
not JSON, far too large, or that echo the request's secrets back.

Whatever comes back, no token, signature, token-service encryption, app secret or request URL
query may appear in any file under --out, nor in the job's log (stderr, at --verbose).
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.enos import ClientConfig, EnosClient
from batch.enos.client import MAX_ANSWER_BYTES
from batch.enos.errors import (
    AuthError,
    GatewayError,
    MalformedResponse,
    TokenServiceError,
    classify,
)
from batch.model import Device, ErrorClass
from tests import hostile
from tests.hostile import Chunks, Request

FLEET_RENEW = Path(sys.executable).with_name("fleet-renew")
APP_KEY, APP_SECRET = "hostile-app", "hostile-secret-5f0c1d2e3a4b"
ORG = "o-hostile"

# assetId -> the garbage the Renew call gets for it.
GARBAGE: dict[str, Callable[[Request], Chunks]] = {
    "long-header": hostile.long_header,
    "bad-status": hostile.bad_status_line,
    "truncated": hostile.truncated_chunked,
    "bad-json": hostile.bad_json,
    "reflected": hostile.reflected,
    "reflected-5xx": hostile.reflected_5xx,
    "reflected-ok": hostile.reflected_ok,
    "reflected-in-cert": hostile.reflected_in_cert,
}


def by_asset(request: Request) -> Chunks:
    return GARBAGE[request.query["assetId"]](request)


def write_inventory(path: Path, assets: list[str]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["orgId", "assetId", "certSn"])
        writer.writerows([ORG, asset, 1000 + n] for n, asset in enumerate(assets))
    return path


async def run_job(inventory: Path, out: Path, url: str, *extra: str) -> tuple[int, str]:
    """`fleet-renew -v run` as a process (the test's event loop keeps serving meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_")}
    env |= {"ENOS_APP_KEY": APP_KEY, "ENOS_APP_SECRET": APP_SECRET}
    process = await asyncio.create_subprocess_exec(
        str(FLEET_RENEW), "-v", "run", str(inventory), "--out", str(out), "--api-url", url,
        "--max-attempts", "2", "--timeout", "10", "--progress", "off", "--rate", "50", *extra,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, (stdout + stderr).decode("utf-8", "replace")


def readable(path: Path) -> bytes:
    """A file's bytes, and for Parquet also its decoded values (its pages may be compressed)."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        data += str(pq.read_table(path).to_pylist()).encode()
    return data


def leaks(out: Path, log: str, sent: set[str]) -> list[str]:
    """Where any of `sent` (or the app secret) appears: file names under `out`, or "log"."""
    values = [value.encode() for value in {*sent, APP_SECRET}]
    found = [
        str(path.relative_to(out))
        for path in sorted(out.rglob("*"))
        if path.is_file() and any(value in readable(path) for value in values)
    ]
    if any(value.decode() in log for value in values):
        found.append("log")
    return found


def report_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "report.csv").open(newline="") as stream:
        return {row["assetId"]: row for row in csv.DictReader(stream)}


@pytest.mark.slow
async def test_garbage_renew_answers_leak_no_secret_into_outputs_or_logs(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inventory.csv", list(GARBAGE))
    out = tmp_path / "out"
    async with hostile.hostile_server(by_asset) as server:
        code, log = await run_job(inventory, out, server.url)
    sent = server.secrets_sent()
    assert code == 1, log
    assert len(sent) > 3 and any(r.headers.get("apim-signature") for r in server.seen)
    assert {"report.csv", "report.parquet", "report.html", "summary.json"} <= {
        p.name for p in out.iterdir()
    }
    assert leaks(out, log, sent) == []
    rows = report_rows(out)
    assert {row["status"] for row in rows.values()} == {"failed"}
    assert "not valid HTTP" in rows["long-header"]["errorMessage"]
    assert "not valid HTTP" in rows["bad-status"]["errorMessage"]
    assert "cut short" in rows["truncated"]["errorMessage"]
    assert "not JSON" in rows["bad-json"]["errorMessage"]
    assert rows["reflected"]["errorClass"] == "invalid_request"
    assert "[redacted]" in rows["reflected"]["errorMessage"]


@pytest.mark.slow
async def test_garbage_token_service_answer_leaks_no_secret(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inventory.csv", ["reflected"])
    out = tmp_path / "out"
    async with hostile.hostile_server(by_asset, token_answer=hostile.long_header) as server:
        code, log = await run_job(inventory, out, server.url)
    assert code == 1, log
    assert [r.path.rsplit("/", 1)[-1] for r in server.seen][:1] == ["get"]
    assert leaks(out, log, server.secrets_sent()) == []
    assert "not valid HTTP" in report_rows(out)["reflected"]["errorMessage"]


async def test_a_token_service_refusal_echoing_the_request_is_redacted() -> None:
    refusal = hostile.token_refused_reflecting
    async with (
        hostile.hostile_server(hostile.reflected, token_answer=refusal) as server,
        client_for(server.url) as client,
    ):
        with pytest.raises(AuthError) as caught:
            await client.renew_certificate(DEVICE, cert_sn=1000)
    text = str(caught.value)
    assert "invalid encryption in" in text and "[redacted]" in text and APP_KEY in text
    assert not [secret for secret in server.secrets_sent() if secret in text]
    assert APP_SECRET not in text


async def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else() -> None:
    async with hostile.hostile_server(hostile.reflected) as elsewhere:

        def redirect(request: Request) -> Chunks:
            location = f"{elsewhere.url}/steal?{request.query_string}"
            return hostile.http("307 Temporary Redirect", {"Location": location}, b"")

        async with (
            hostile.hostile_server(redirect) as server,
            client_for(server.url) as client,
        ):
            with pytest.raises(GatewayError) as caught:
                await client.renew_certificate(DEVICE, cert_sn=1000)
    assert caught.value.http_status == 307 and elsewhere.seen == []
    assert [r.query.get("action") for r in server.seen if r.query] == ["renew"]


# --- answers too large to read ------------------------------------------------------------

BIG = 8 * MAX_ANSWER_BYTES


def client_for(url: str) -> EnosClient:
    return EnosClient(ClientConfig(base_url=url, app_key=APP_KEY, app_secret=APP_SECRET))


DEVICE = Device(row=2, org_id=ORG, asset_id="a-1", cert_sn=1000)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_renew_answer_over_the_cap_is_malformed_and_not_read(declared: bool) -> None:
    async with (
        hostile.hostile_server(hostile.huge(BIG, declared=declared)) as server,
        client_for(server.url) as client,
    ):
        with pytest.raises(MalformedResponse, match="larger than 1048576 bytes") as caught:
            await client.renew_certificate(DEVICE, cert_sn=1000)
    assert classify(caught.value) is ErrorClass.MALFORMED_RESPONSE


async def test_a_compressed_answer_that_inflates_past_the_cap_is_malformed() -> None:
    async with (
        hostile.hostile_server(hostile.gzip_bomb(16 << 20)) as server,
        client_for(server.url) as client,
    ):
        with pytest.raises(MalformedResponse, match="larger than 1048576 bytes"):
            await client.renew_certificate(DEVICE, cert_sn=1000)


async def test_renew_answer_just_under_the_cap_is_read_whole() -> None:
    size = MAX_ANSWER_BYTES - 1000
    async with (
        hostile.hostile_server(hostile.huge(size, declared=False)) as server,
        client_for(server.url) as client,
    ):
        issued = await client.renew_certificate(DEVICE, cert_sn=1000)
    assert issued.cert_sn == "7" and len(issued.cert_pem) > size - 100


async def test_token_answer_over_the_cap_is_a_token_service_failure() -> None:
    too_big = hostile.huge(BIG, declared=True)
    async with (
        hostile.hostile_server(hostile.reflected, token_answer=too_big) as server,
        client_for(server.url) as client,
    ):
        with pytest.raises(TokenServiceError, match="larger than") as caught:
            await client.renew_certificate(DEVICE, cert_sn=1000)
    assert isinstance(caught.value.__cause__, MalformedResponse)  # never `ambiguous`: nothing sent
    assert [r.path.rsplit("/", 1)[-1] for r in server.seen] == ["get"]  # no business call left


@pytest.mark.slow
async def test_100_mb_renew_answers_are_neither_journaled_nor_bundled(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inventory.csv", ["a-1", "a-2"])
    out = tmp_path / "out"
    async with hostile.hostile_server(hostile.huge(100 << 20, declared=False)) as server:
        code, log = await run_job(inventory, out, server.url, "--max-attempts", "1")
    assert code == 1, log
    rows = report_rows(out)
    assert {row["errorClass"] for row in rows.values()} == {"ambiguous"}  # rerun reconciles
    assert all("larger than 1048576 bytes" in row["errorMessage"] for row in rows.values())
    assert (out / "journal.sqlite").stat().st_size < MAX_ANSWER_BYTES
    assert not any(path.is_file() for path in (out / "bundles").rglob("*"))
