"""batch.store.journal: real SQLite files in tmp_path, a real child process killed with -9."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from batch.model import ErrorClass, KeyMode, Outcome, Resolution, Status, identity_key
from batch.renew import keys
from batch.store.journal import (
    ALLOWED,
    Entry,
    Journal,
    JournalError,
    State,
    StateError,
    outcome_from_json,
    outcome_to_json,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUBJECT = x509.Name.from_rfc4514_string("CN=meter-1,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN")
MATERIAL = keys.generate(KeyMode.EC256, SUBJECT)
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"  # opaque to the journal
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----"


def full_outcome(**changes: object) -> Outcome:
    """An Outcome with every field set to something other than its default."""
    outcome = Outcome(
        row=7,
        status=Status.RENEWED,
        org_id="o1",
        asset_id="asset-7",
        product_key="pk",
        device_key="dk-7",
        old_cert_sn=52770,
        error_class=ErrorClass.VERIFICATION_FAILED,
        error_code=99500,
        error_message='say "hi"\nagain',
        attempts=3,
        new_cert_sn="52771",
        current_cert_sn="52769",
        not_before=AT,
        not_after=datetime(2027, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=8))),
        requested_days=365,
        granted_days=365,
        clamped=False,
        key_type="EC-P256",
        cert_sha256="ab" * 32,
        bundle_path="bundles/o1/asset-7",
        request_id="3eaf8fb2",
        duration_ms=1234,
        resolution=Resolution.RECONCILED,
        canary=True,
        note="renewed 52771 again",
    )
    return dataclasses.replace(outcome, **changes)  # type: ignore[arg-type]


async def intent(
    journal: Journal, key: str, *, row: int = 2, at: datetime = AT, **kw: object
) -> None:
    values: dict[str, object] = {
        "row": row,
        "cert_sn": 52770,
        "key_pem": MATERIAL.key_pem,
        "csr_pem": MATERIAL.csr_pem,
        "key_type": MATERIAL.key_type,
        "at": at,
    }
    values.update(kw)
    await journal.record_intent(key, **values)  # type: ignore[arg-type]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite")
    yield opened
    await opened.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files ----------------------------------------------------------------------------------


async def test_journal_and_its_wal_are_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    umask = os.umask(0o002)  # a permissive umask must not leak the keys
    try:
        async with await Journal.open(path) as journal:
            await intent(journal, "o1/a")
            assert mode(path) == 0o600
            assert mode(Path(f"{path}-wal")) == 0o600
            assert mode(Path(f"{path}-shm")) == 0o600
            assert mode(Path(f"{path}.lock")) == 0o600
    finally:
        os.umask(umask)


async def test_an_existing_journal_readable_by_others_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.touch(mode=0o644)
    path.chmod(0o644)
    async with await Journal.open(path):
        assert mode(path) == 0o600


async def test_a_second_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = await Journal.open(path)
    with pytest.raises(JournalError, match="in use by another run") as info:
        await Journal.open(path)
    assert info.value.exit_code == 2
    await first.close()
    second = await Journal.open(path)  # the lock went with the first journal
    await second.close()


async def test_a_journal_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with await Journal.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    db.close()
    with pytest.raises(JournalError, match="schema 99"):
        await Journal.open(path)
    async with await Journal.open(tmp_path / "other.sqlite"):
        pass  # the failed open released its lock and connections; others still work
    with pytest.raises(JournalError, match="schema 99"):
        await Journal.open(path)  # not "in use": the failed open released the lock


async def _old_version_journal(path: Path, *keys_and_outcomes: tuple[str, Outcome | None]) -> None:
    """A journal as versions before typed keys left it: `org/identity` keys, no "keys" meta."""
    async with await Journal.open(path) as journal:
        for key, outcome in keys_and_outcomes:
            if outcome is None:
                await journal.record_intent(
                    key,
                    row=2,
                    cert_sn=1,
                    key_pem=None,
                    csr_pem=None,
                    key_type=None,
                    at=datetime.now(UTC),
                )
            else:
                await journal.record_failed(key, outcome=outcome)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE name = 'keys'")
    db.close()


async def test_an_old_journal_is_rekeyed_by_its_outcomes_and_unambiguous_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    pair = Outcome(
        row=3, status=Status.FAILED, org_id="o/x", product_key="pk", device_key="dk", old_cert_sn=1
    )
    await _old_version_journal(path, ("o/x/pk/dk", pair), ("o1/a1", None))
    async with await Journal.open(path) as journal:
        assert set(journal.index()) == {
            identity_key("o/x", None, "pk", "dk"),
            identity_key("o1", "a1", None, None),
        }


async def test_an_old_journal_with_an_ambiguous_unfinished_device_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    await _old_version_journal(path, ("o1/pk1/dk1", None))  # org/pair, or org/"pk1/dk1"?
    with pytest.raises(JournalError, match="earlier version"):
        await Journal.open(path)


def test_identity_keys_of_an_asset_and_a_pair_never_collide() -> None:
    asset = identity_key("o1", "pk1/dk1", None, None)
    assert asset != identity_key("o1", None, "pk1", "dk1")
    assert identity_key("o/a", "b", None, None) != identity_key("o", "a/b", None, None)
    assert identity_key("o", None, "a/b", "c") != identity_key("o", None, "a", "b/c")


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite")
    await journal.close()
    await journal.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await intent(journal, "o1/a")


# -- every state, round trip ----------------------------------------------------------------


async def test_every_state_round_trips_through_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    renewed = full_outcome(status=Status.RENEWED, error_class=None, row=2)
    failed = full_outcome(status=Status.FAILED, row=4, new_cert_sn=None)
    async with await Journal.open(path) as journal:
        await intent(journal, "o1/intent", row=5)
        await intent(journal, "o1/renewed", row=2)
        await journal.record_renewed(
            "o1/renewed", outcome=renewed, cert_pem=CERT_PEM, ca_pem=CA_PEM
        )
        await intent(journal, "o1/bundled", row=3)
        await journal.record_renewed(
            "o1/bundled", outcome=renewed, cert_pem=CERT_PEM, ca_pem=CA_PEM
        )
        await journal.record_bundled("o1/bundled", bundle_path="bundles/o1/bundled")
        await intent(journal, "o1/failed", row=4, key_pem=None, csr_pem=None, key_type=None)
        await journal.record_failed("o1/failed", outcome=failed)
        before = journal.load()
    async with await Journal.open(path) as journal:
        after = journal.load()
        assert journal.index() == {
            "o1/intent": State.INTENT,
            "o1/renewed": State.RENEWED,
            "o1/bundled": State.BUNDLED,
            "o1/failed": State.FAILED,
        }
        assert journal.get("o1/bundled") == after["o1/bundled"]
        assert journal.get("o1/nothing") is None

    assert after == before
    assert list(after) == ["o1/renewed", "o1/bundled", "o1/failed", "o1/intent"]  # by row
    pending = after["o1/intent"]
    assert pending == Entry(
        key="o1/intent",
        row=5,
        state=State.INTENT,
        attempts=1,
        cert_sn=52770,
        key_pem=MATERIAL.key_pem,
        csr_pem=MATERIAL.csr_pem,
        key_type="EC-P256",
        intent_at=AT,
    )
    assert keys.from_journal(pending.key_pem, pending.csr_pem or "") == MATERIAL
    done = after["o1/renewed"]
    assert (done.state, done.cert_pem, done.ca_pem) == (State.RENEWED, CERT_PEM, CA_PEM)
    assert (done.new_cert_sn, done.outcome, done.bundle_path) == ("52771", renewed, None)
    bundled = after["o1/bundled"]
    assert (bundled.state, bundled.bundle_path) == (State.BUNDLED, "bundles/o1/bundled")
    assert bundled.key_pem == MATERIAL.key_pem  # kept: a lost bundle can be rewritten
    gave_up = after["o1/failed"]
    assert (gave_up.state, gave_up.outcome, gave_up.key_pem) == (State.FAILED, failed, None)


async def test_entry_repr_hides_key_material(journal: Journal) -> None:
    await intent(journal, "o1/a")
    entry = journal.get("o1/a")
    assert entry is not None and entry.key_pem is not None
    assert entry.key_pem.decode().splitlines()[1] not in repr(entry)
    assert "PRIVATE" not in repr(entry)


async def test_a_retry_counts_attempts_and_keeps_the_first_intent_key_and_csr(
    journal: Journal,
) -> None:
    other = keys.generate(KeyMode.EC256, SUBJECT)
    await intent(journal, "o1/a", at=AT)
    await intent(
        journal,
        "o1/a",
        at=AT + timedelta(minutes=5),
        cert_sn=99999,
        key_pem=other.key_pem,
        csr_pem=other.csr_pem,
    )
    entry = journal.get("o1/a")
    assert entry is not None
    assert entry.attempts == 2
    assert entry.intent_at == AT
    assert (entry.key_pem, entry.csr_pem, entry.cert_sn) == (
        MATERIAL.key_pem,
        MATERIAL.csr_pem,
        52770,
    )


async def test_retrying_a_failed_device_returns_it_to_intent(journal: Journal) -> None:
    await intent(journal, "o1/a")
    await journal.record_failed("o1/a", outcome=full_outcome(status=Status.FAILED))
    await intent(journal, "o1/a")
    entry = journal.get("o1/a")
    assert entry is not None
    assert (entry.state, entry.attempts, entry.outcome) == (State.INTENT, 2, None)


async def test_a_failed_verification_keeps_its_certificate_and_state(journal: Journal) -> None:
    await intent(journal, "o1/a")
    outcome = full_outcome(status=Status.FAILED, error_class=ErrorClass.VERIFICATION_FAILED)
    await journal.record_failed("o1/a", outcome=outcome, cert_pem=CERT_PEM, ca_pem=CA_PEM)
    await journal.record_bundled("o1/a", bundle_path="bundles/o1/a")
    entry = journal.get("o1/a")
    assert entry is not None
    assert (entry.state, entry.cert_pem, entry.bundle_path) == (
        State.FAILED,
        CERT_PEM,
        "bundles/o1/a",
    )


async def test_an_outcome_without_an_intent_creates_the_entry(journal: Journal) -> None:
    outcome = full_outcome(status=Status.FAILED, row=9, old_cert_sn="123")
    await journal.record_failed("o1/z", outcome=outcome)
    entry = journal.get("o1/z")
    assert entry is not None
    assert (entry.row, entry.cert_sn, entry.attempts, entry.state) == (9, 123, 0, State.FAILED)
    with pytest.raises(ValueError, match="no integer old_cert_sn"):
        await journal.record_failed("o1/y", outcome=full_outcome(old_cert_sn=None))


async def test_a_bundled_entrys_outcome_says_where_its_bundle_is(tmp_path: Path) -> None:
    # The outcome is journaled before the bundle exists; a resumed report row is that outcome.
    path = tmp_path / "journal.sqlite"
    async with await Journal.open(path) as journal:
        await intent(journal, "o1/a")
        outcome = full_outcome(status=Status.RENEWED, error_class=None, bundle_path=None)
        await journal.record_renewed("o1/a", outcome=outcome, cert_pem=CERT_PEM, ca_pem=CA_PEM)
        renewed = journal.get("o1/a")
        await journal.record_bundled("o1/a", bundle_path="bundles/o1/a")
    async with await Journal.open(path) as journal:
        entry = journal.get("o1/a")
        assert entry is not None and entry.outcome is not None
        assert entry.outcome == dataclasses.replace(outcome, bundle_path="bundles/o1/a")
        assert journal.load()["o1/a"] == entry
    assert renewed is not None and renewed.outcome == outcome  # no bundle yet, no path


async def test_issuing_cas_are_remembered_once_across_runs(tmp_path: Path) -> None:
    # List Certificate does not return the CA: a rerun needs the CAs earlier runs were sent.
    path = tmp_path / "journal.sqlite"
    other_ca = CA_PEM.replace("MIIC", "MIID")
    async with await Journal.open(path) as journal:
        assert journal.ca_pems() == []
        for key, ca in (("o1/a", CA_PEM), ("o1/b", CA_PEM), ("o1/c", other_ca)):
            await intent(journal, key)
            await journal.record_renewed(key, outcome=full_outcome(), cert_pem=CERT_PEM, ca_pem=ca)
        await intent(journal, "o1/d")
        await journal.record_failed("o1/d", outcome=full_outcome(status=Status.FAILED))
    async with await Journal.open(path) as journal:
        assert sorted(journal.ca_pems()) == sorted([CA_PEM, other_ca])


@pytest.mark.parametrize(
    ("setup", "action", "refused_in"),
    [
        ("renewed", "intent", "state renewed"),
        ("bundled", "intent", "state bundled"),
        ("renewed", "failed", "state renewed"),
        ("bundled", "renewed", "state bundled"),
        ("intent", "bundled", "state intent"),
        ("none", "bundled", "no entry"),
    ],
)
async def test_transitions_that_could_renew_twice_are_refused(
    journal: Journal, setup: str, action: str, refused_in: str
) -> None:
    if setup != "none":
        await intent(journal, "o1/a")
    if setup in ("renewed", "bundled"):
        await journal.record_renewed(
            "o1/a", outcome=full_outcome(), cert_pem=CERT_PEM, ca_pem=CA_PEM
        )
    if setup == "bundled":
        await journal.record_bundled("o1/a", bundle_path="b")
    before = journal.get("o1/a")
    actions = {
        "intent": lambda: intent(journal, "o1/a"),
        "failed": lambda: journal.record_failed("o1/a", outcome=full_outcome()),
        "renewed": lambda: journal.record_renewed(
            "o1/a", outcome=full_outcome(), cert_pem=CERT_PEM, ca_pem=CA_PEM
        ),
        "bundled": lambda: journal.record_bundled("o1/a", bundle_path="b"),
    }
    with pytest.raises(StateError, match=f"refuses {action} for 'o1/a' in {refused_in}"):
        await actions[action]()
    assert journal.get("o1/a") == before  # nothing changed


def test_the_transition_table_never_lets_a_renewed_device_be_sent_again() -> None:
    for finished in (State.RENEWED, State.BUNDLED):
        assert finished not in ALLOWED["intent"]
        assert finished not in ALLOWED["failed"]


async def test_a_refused_operation_fails_alone_inside_its_group_commit(journal: Journal) -> None:
    await intent(journal, "o1/done")
    await journal.record_renewed(
        "o1/done", outcome=full_outcome(), cert_pem=CERT_PEM, ca_pem=CA_PEM
    )
    commits = journal.commits
    results = await asyncio.gather(
        *(intent(journal, f"o1/d{i}") for i in range(20)),
        intent(journal, "o1/done"),
        *(intent(journal, f"o1/e{i}") for i in range(20)),
        return_exceptions=True,
    )
    assert [type(r) for r in results if r is not None] == [StateError]
    assert sum(1 for k in journal.index() if k.startswith(("o1/d", "o1/e"))) == 41  # 40 + done
    assert journal.commits - commits < 41  # they really shared transactions


# -- meta -----------------------------------------------------------------------------------


async def test_meta_is_set_replaced_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with await Journal.open(path) as journal:
        assert journal.get_meta("inventory_sha256") is None
        await journal.set_meta("inventory_sha256", "aaa")
        await journal.set_meta("inventory_sha256", "bbb")
        assert journal.get_meta("inventory_sha256") == "bbb"
    async with await Journal.open(path) as journal:
        assert journal.get_meta("inventory_sha256") == "bbb"
        assert journal.get_meta("schema") == "1"


# -- group commit and durability ------------------------------------------------------------


async def test_group_commit_groups_500_concurrent_intents(journal: Journal) -> None:
    await asyncio.gather(*(intent(journal, f"o1/d{i}", row=i + 2) for i in range(500)))
    entries = journal.load()
    assert len(entries) == 500
    assert all(e.state is State.INTENT and e.attempts == 1 for e in entries.values())
    assert 1 <= journal.commits < 50, journal.commits


async def test_sequential_writes_each_commit(journal: Journal) -> None:
    for i in range(5):
        await intent(journal, f"o1/d{i}")
    assert journal.commits == 5  # nothing waits for company: each await is its own commit


async def test_writes_submitted_in_the_tick_that_closes_the_journal_are_committed(
    tmp_path: Path,
) -> None:
    """Writes go to the writer thread once per tick: `close` in that same tick hands them over
    before it stops the thread (else they would never commit and their callers wait forever)."""
    path = tmp_path / "journal.sqlite"
    journal = await Journal.open(path)
    writes = [asyncio.create_task(intent(journal, f"o1/d{i}", row=i + 2)) for i in range(3)]
    await asyncio.sleep(0)  # the writes are submitted; their hand-off is due at the tick's end
    async with asyncio.timeout(10):
        await journal.close()
        await asyncio.gather(*writes)
    async with await Journal.open(path) as again:
        assert sorted(again.load()) == ["o1/d0", "o1/d1", "o1/d2"]


async def test_non_durable_journal_works_and_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with await Journal.open(path, durable=False) as journal:
        assert journal.durable is False
        await asyncio.gather(*(intent(journal, f"o1/d{i}") for i in range(50)))
        await journal.record_renewed(
            "o1/d0", outcome=full_outcome(), cert_pem=CERT_PEM, ca_pem=CA_PEM
        )
    async with await Journal.open(path) as journal:
        assert journal.durable is True
        index = journal.index()
        assert len(index) == 50 and index["o1/d0"] is State.RENEWED


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from cryptography import x509
    from batch.renew import keys
    from batch.store.journal import Journal
    from batch.model import KeyMode

    SUBJECT = x509.Name.from_rfc4514_string("CN=m,OU=EnOS,O=EnOS,L=Shanghai,ST=Shanghai,C=CN")

    async def worker(journal, w):
        i = 0
        while True:
            key = f"o1/w{w}-{i}"
            m = keys.generate(KeyMode.EC256, SUBJECT)
            await journal.record_intent(
                key, row=i, cert_sn=i, key_pem=m.key_pem, csr_pem=m.csr_pem,
                key_type=m.key_type, at=datetime.now(UTC),
            )
            print("ok", key, m.public_key_sha256, flush=True)
            i += 1

    async def main():
        journal = await Journal.open(Path(sys.argv[1]))
        await asyncio.gather(*(worker(journal, w) for w in range(8)))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("kill_after", [1, 150, 600])
async def test_sigkill_right_after_acknowledged_intents_loses_none(
    tmp_path: Path, kill_after: int
) -> None:
    path = tmp_path / "journal.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    acknowledged: dict[str, str] = {}
    with subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                _, key, digest = line.split()
                acknowledged[key] = digest
                if len(acknowledged) >= kill_after:
                    child.send_signal(signal.SIGKILL)
                    break
            # lines the child printed before it died were acknowledged too; the kill may cut
            # the last print short (seen once under load): a line without its newline is not
            # an acknowledgement, and only the last line can be one
            rest = child.stdout.read().split("\n")
            assert all(len(line.split()) == 3 for line in rest[:-1]), rest
            acknowledged.update(dict(line.split()[1:] for line in rest[:-1]))
        finally:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= kill_after

    async with await Journal.open(path) as journal:  # the dead child's lock is gone
        entries = journal.load()
    missing = set(acknowledged) - set(entries)
    assert not missing, f"{len(missing)} acknowledged intents lost"
    for key, digest in acknowledged.items():
        entry = entries[key]
        assert entry.state is State.INTENT
        assert entry.key_pem is not None
        assert keys.private_key_sha256(entry.key_pem) == digest  # the key EnOS may certify


# -- Outcome JSON ---------------------------------------------------------------------------


def test_the_full_outcome_sets_every_field_so_the_round_trip_covers_them() -> None:
    outcome, default = full_outcome(), Outcome(row=0, status=Status.SKIPPED)
    for field in dataclasses.fields(Outcome):
        assert getattr(outcome, field.name) != getattr(default, field.name), field.name


def test_outcome_json_round_trips_exactly() -> None:
    outcome = full_outcome()
    back = outcome_from_json(outcome_to_json(outcome))
    assert back == outcome
    assert type(back.status) is Status and type(back.error_class) is ErrorClass
    assert type(back.resolution) is Resolution
    assert back.not_after is not None and back.not_after.utcoffset() == timedelta(hours=8)
    assert back.old_cert_sn == 52770 and back.new_cert_sn == "52771"  # int stays int, str str
    bare = Outcome(row=1, status=Status.INVALID)
    assert outcome_from_json(outcome_to_json(bare)) == bare


@given(
    status=st.sampled_from(Status),
    error_class=st.none() | st.sampled_from(ErrorClass),
    resolution=st.none() | st.sampled_from(Resolution),
    moment=st.none() | st.datetimes(timezones=st.none() | st.timezones()),
    old_cert_sn=st.none() | st.integers(min_value=0, max_value=2**160) | st.text(max_size=20),
    note=st.none() | st.text(),
    clamped=st.none() | st.booleans(),
)
def test_outcome_json_round_trips_any_values(
    status: Status,
    error_class: ErrorClass | None,
    resolution: Resolution | None,
    moment: datetime | None,
    old_cert_sn: int | str | None,
    note: str | None,
    clamped: bool | None,
) -> None:
    outcome = Outcome(
        row=1,
        status=status,
        error_class=error_class,
        resolution=resolution,
        not_before=moment,
        old_cert_sn=old_cert_sn,
        note=note,
        clamped=clamped,
    )
    back = outcome_from_json(outcome_to_json(outcome))
    # Compared field by field: Python never calls a local time inside a DST gap or fold equal
    # to a time in another zone, even at the same instant, so `==` on the datetimes is wrong.
    without_moment = {"not_before": None}
    assert dataclasses.replace(back, **without_moment) == dataclasses.replace(
        outcome, **without_moment
    )
    if moment is None:
        assert back.not_before is None
    else:
        assert back.not_before is not None
        assert back.not_before.timestamp() == moment.timestamp()  # the same instant
        assert back.not_before.utcoffset() == moment.utcoffset()  # the offset, not just the instant
