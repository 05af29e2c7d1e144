"""The key pool: real worker processes, real keys; bounded, and no worker outlives its pool.

(That the workers end when the job itself is killed or stopped is in tests/test_crash.py.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509

from batch.model import KeyMode
from batch.renew import keys
from batch.renew.keypool import KeyPool

SUBJECT = x509.Name.from_rfc4514_string("CN=dev-1,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN")


@pytest.fixture
def fallback() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def assert_sound(material: keys.KeyMaterial, key_type: str) -> None:
    """The key is the CSR's, the CSR is for SUBJECT and passes EnOS's rules."""
    assert material.key_type == key_type and material.key_pem is not None
    keys.from_journal(material.key_pem, material.csr_pem)  # raises unless the key is the CSR's
    assert keys.parse_csr(material.csr_pem.encode()).subject == SUBJECT


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def test_each_take_is_a_new_rsa_key_with_a_csr_for_the_subject(
    fallback: ThreadPoolExecutor,
) -> None:
    async with KeyPool.started(KeyMode.RSA2048, fallback=fallback, workers=2) as pool:
        taken = await asyncio.gather(*(pool.take(SUBJECT) for _ in range(3)))
    for material in taken:
        assert_sound(material, "RSA-2048")
    assert len({m.public_key_sha256 for m in taken}) == 3


async def test_a_worker_makes_one_key_ahead_then_waits_and_opens_no_file(
    fallback: ThreadPoolExecutor,
) -> None:
    async with KeyPool.started(KeyMode.EC256, fallback=fallback, workers=1) as pool:
        assert_sound(await pool.take(SUBJECT), "EC-P256")
        (pid,) = pool.pids
        await asyncio.sleep(0.2)  # its next key (0.03 ms) is made: now it waits for a request
        before = cpu_ticks(pid)
        await asyncio.sleep(0.5)  # a worker that kept generating would burn ~50 ticks here
        assert cpu_ticks(pid) == before
        # Its keys live in its memory only: besides its standard streams, no file is open.
        fds = [name for name in os.listdir(f"/proc/{pid}/fd") if int(name) > 2]
        assert fds == []


async def test_a_cancelled_take_leaves_the_worker_usable(fallback: ThreadPoolExecutor) -> None:
    async with KeyPool.started(KeyMode.EC256, fallback=fallback, workers=1) as pool:
        waiting = asyncio.create_task(pool.take(SUBJECT))
        await asyncio.sleep(0)  # it has asked the worker and waits for the answer
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with asyncio.timeout(10):  # the one worker was not lost with the cancelled taker
            taken = [await pool.take(SUBJECT) for _ in range(3)]
    for material in taken:
        assert_sound(material, "EC-P256")
    assert len({m.public_key_sha256 for m in taken}) == 3


async def test_keys_come_from_a_thread_once_every_worker_is_gone(
    fallback: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    async with KeyPool.started(KeyMode.EC256, fallback=fallback, workers=2) as pool:
        await pool.take(SUBJECT)
        os.kill(pool.pids[0], signal.SIGKILL)
        async with asyncio.timeout(10):
            first = [await pool.take(SUBJECT) for _ in range(3)]  # the other worker serves
            os.kill(pool.pids[1], signal.SIGKILL)
            then = [await pool.take(SUBJECT) for _ in range(3)]  # keys.generate in a thread
    for material in first + then:
        assert_sound(material, "EC-P256")
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lost) == 2 and "generated in this process from now on" in lost[1]


async def test_no_worker_outlives_the_pool(fallback: ThreadPoolExecutor) -> None:
    async with KeyPool.started(KeyMode.RSA2048, fallback=fallback, workers=2) as pool:
        await pool.take(SUBJECT)
        pids = pool.pids
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]  # ended and reaped
