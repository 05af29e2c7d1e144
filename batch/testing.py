"""Job-level helpers for tests, benchmarks and one's own experiments: a fleet, its inventory file,
the real simulator on loopback, one whole run of the job, and checks on what it wrote.

Everything here runs the real thing (no mocks): `job` writes a CSV inventory, starts the
simulator with the same devices, runs `batch.run.job.run` against it and reads the report back.
"""

from __future__ import annotations

import asyncio
import csv
import random
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from batch.config import Credentials, run_config
from batch.enos.client import ClientConfig, EnosClient
from batch.model import Device, Issued, KeyMode
from batch.outputs.report import Summary
from batch.renew import keys
from batch.run.job import output_folder, run
from batch.simulator import RunningSimulator, SimulatorConfig, running_simulator
from batch.store.journal import Journal

__all__ = [
    "KEY",
    "ORG",
    "SECRET",
    "Result",
    "assert_bundle_is_sound",
    "fleet",
    "job",
    "load_cert",
    "lose_a_renewal",
    "read_csv",
    "run_job",
    "simulator",
    "write_inventory",
]

ORG = "o-test"
KEY, SECRET = "pipeline-key", "pipeline-secret"


def write_inventory(path: Path, rows: Iterable[Mapping[str, object]]) -> Path:
    rows = list(rows)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def fleet(n: int, start: int = 1000, **extra: object) -> list[dict[str, object]]:
    return [
        {
            "orgId": ORG,
            "productKey": "pkA",
            "deviceKey": f"dev-{i:04d}",
            "certSn": start + i,
            **extra,
        }
        for i in range(n)
    ]


@dataclass
class Result:
    summary: Summary
    rows: list[dict[str, str]]
    out: Path
    sim: RunningSimulator

    def by_device(self) -> dict[str, dict[str, str]]:
        return {r["deviceKey"] or r["assetId"]: r for r in self.rows}

    def renewals(self, identity: str) -> int:
        return int(self.sim.state_dict()["devices"][identity]["renewals"])


@asynccontextmanager
async def simulator(
    rows: list[dict[str, object]], tmp: Path, **kw: Any
) -> AsyncIterator[RunningSimulator]:
    config = SimulatorConfig(app_key=KEY, app_secret=SECRET, org_id=ORG, **kw)
    async with running_simulator(config, rows) as sim:
        yield sim


async def run_job(
    sim: RunningSimulator,
    inventory: Path,
    out: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    **options: Any,
) -> Result:
    """Run the job against `sim`; `options` go to `run_config`, `clock`/`sleep`/`rng` to
    `batch.run.job.run` (a `batch.clock.FakeClock` makes its timings exact)."""
    options.setdefault("rate", 200)
    options.setdefault("progress", "off")
    config = run_config(
        inventory=inventory,
        out_dir=out,
        api_url=sim.url,
        credentials=Credentials(app_key=KEY, app_secret=SECRET),
        **options,
    )
    summary = await run(config, clock=clock, sleep=sleep, rng=rng)
    return Result(summary, read_csv(output_folder(config) / "report.csv"), out, sim)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


async def job(
    tmp_path: Path,
    rows: list[dict[str, object]],
    sim_kw: Mapping[str, Any] | None = None,
    inventory_rows: list[dict[str, object]] | None = None,
    **options: Any,
) -> Result:
    inventory = write_inventory(tmp_path / "inventory.csv", inventory_rows or rows)
    async with simulator(rows, tmp_path, **(sim_kw or {})) as sim:
        return await run_job(sim, inventory, tmp_path / "out", **options)


async def lose_a_renewal(
    sim: RunningSimulator, out: Path, device: Device
) -> tuple[keys.KeyMaterial, Issued]:
    """What a crash right after a renew request left behind: the journal holds the intent (with
    a new EC key) and EnOS renewed, but no answer was ever recorded."""
    material = keys.generate(KeyMode.EC256, keys.subject_for(device))
    async with await Journal.open(out / "journal.sqlite") as journal:
        await journal.record_intent(
            device.key,
            row=device.row,
            cert_sn=device.cert_sn,
            key_pem=material.key_pem,
            csr_pem=material.csr_pem,
            key_type=material.key_type,
            at=datetime.now(UTC),
        )
    config = ClientConfig(base_url=str(sim.url), app_key=KEY, app_secret=SECRET)
    async with EnosClient(config) as client:
        issued = await client.renew_certificate(
            device, cert_sn=device.cert_sn, csr=material.csr_pem, issue_authority="ECC"
        )
    return material, issued


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def assert_bundle_is_sound(bundle: Path, *, with_key: bool) -> None:
    cert, ca = load_cert(bundle / "cert.pem"), load_cert(bundle / "ca.pem")
    cert.verify_directly_issued_by(ca)
    assert (
        (bundle / "fullchain.pem")
        .read_bytes()
        .startswith((bundle / "cert.pem").read_bytes().strip())
    )
    key_path = bundle / "key.pem"
    assert key_path.exists() is with_key
    if with_key:
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
