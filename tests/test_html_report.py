"""report.html from real runs against the simulator, rendered in real headless Chromium.

The page is served by a loopback aiohttp server of the test, which records every request: the
only one it may see is the browser's request for report.html (the page fetches nothing).
Chromium is Debian's `chromium` package, which `make test` installs as root (else it says how);
without it these tests fail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from batch.model import ErrorClass, Outcome, Status
from batch.outputs.html import (
    REPORT_HTML,
    TABLE_ROWS,
    ReportRows,
    render_page,
    write_html_report,
)
from batch.outputs.report import ReportWriter, Summary, finish_reports
from batch.outputs.timeline import Sample, timeline_rates
from batch.testing import ORG, Result, fleet, job

CHROMIUM = Path("/usr/bin/chromium")
CHARTS = 5  # status, error class, timeline, latency, validity
HOSTILE = "<script>document.title='pwned'</script><img src=/pwned>"


def timeline_for(summary: Summary, seconds: int = 4) -> list[Sample]:
    """One sample a second from 0 to the end, totals growing evenly, plus the closing sample."""
    renewed = summary.counts_by_status.get(Status.RENEWED, 0)
    failed = summary.counts_by_status.get(Status.FAILED, 0)
    throttled = int(str(summary.extra.get("throttled", 0)))
    samples = []
    for second in range(seconds + 1):
        share = second / seconds
        samples.append(
            Sample(
                at=float(second),
                finished=round(summary.devices * share),
                renewed=round(renewed * share),
                failed=round(failed * share),
                requests=round(summary.requests * share),
                throttled=round(throttled * share),
            )
        )
    return [*samples, samples[-1]]  # the closing sample repeats the last totals


# --- the browser ---------------------------------------------------------------------------------


@asynccontextmanager
async def serving(out_dir: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """Serve `out_dir/report.html` on loopback; yield its URL and the list of paths requested."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path_qs)
        if request.path == "/" + REPORT_HTML:
            return web.FileResponse(out_dir / REPORT_HTML)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/{REPORT_HTML}", seen
    finally:
        await runner.cleanup()


async def dump_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after headless Chromium loaded it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it as `make test` does "
            "(apt-get update && apt-get install -y --no-install-recommends chromium)"
        )
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def render_in_browser(out_dir: Path, tmp_path: Path) -> str:
    async with serving(out_dir) as (url, seen):
        dom = await dump_dom(url, tmp_path / "chromium-profile")
    assert seen == [f"/{REPORT_HTML}"]  # the page itself, and nothing else
    return dom.replace(' class="n"', "")  # numbers are right-aligned; the text is what counts


# --- real runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """Renewed devices (clamped by a short-lived CA), failures of two classes, 429s."""
    rows: list[dict[str, object]] = [
        *fleet(16),
        {"orgId": ORG, "assetId": "gone-1", "certSn": 901, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "gone-2", "certSn": 902, "sandbox": "absent"},
        {"orgId": ORG, "assetId": "old-cert", "certSn": 903, "sandbox": "expired"},
    ]
    tmp = tmp_path_factory.mktemp("html")
    return asyncio.run(
        job(tmp, rows, sim_kw={"rate_limit": 6, "ca_days": 100}, rate=12, valid_days=365)
    )


async def test_report_renders_in_chromium_with_counts_failures_and_charts(
    mixed_run: Result, tmp_path: Path
) -> None:
    summary = mixed_run.summary
    throttled = summary.extra["throttled"]
    assert isinstance(throttled, int) and throttled > 0
    path = write_html_report(mixed_run.out, summary, timeline_for(summary))
    assert path == mixed_run.out / REPORT_HTML

    dom = await render_in_browser(mixed_run.out, tmp_path)

    assert dom.count("<svg") == CHARTS
    for label, count in [("Devices (inventory rows)", 19), ("Renewed", 16), ("Failed", 3)]:
        assert f"<td>{label}</td><td>{count}</td>" in dom
    assert f"<td>HTTP 429 answers</td><td>{throttled}</td>" in dom
    assert "Exit code 1: some devices failed" in dom
    assert "<h2>Failed devices (3)</h2>" in dom
    for device, error_class, code in [
        ("gone-1", "device_not_found", "11404"),
        ("gone-2", "device_not_found", "11404"),
        ("old-cert", "cert_expired", ""),
    ]:
        assert re.search(f"<td>{device}</td><td>{error_class}</td><td>{code}\\d*</td>", dom)
    assert "16 devices were clamped" in dom
    assert "<td>365</td><td>100</td><td>yes</td><td>16</td>" in dom
    assert "<td>pkA/dev-0007</td><td>365</td><td>100</td>" in dom  # named in the clamped list
    assert "Sandbox run" not in dom  # a run against a real endpoint is not called a sandbox


async def test_hostile_device_id_is_shown_as_text_not_run(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        *fleet(2),
        {"orgId": ORG, "assetId": HOSTILE, "certSn": 77, "sandbox": "absent"},
    ]
    result = await job(tmp_path, rows)
    write_html_report(result.out, result.summary, timeline_for(result.summary))
    raw = (result.out / REPORT_HTML).read_text()
    assert HOSTILE not in raw and "&lt;script&gt;document.title=&#x27;pwned&#x27;" in raw

    dom = await render_in_browser(result.out, tmp_path)

    assert "<script" not in dom and "<img" not in dom
    assert "<title>pwned</title>" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=/pwned&gt;" in dom
    assert "<h2>Failed devices (1)</h2>" in dom


# --- what the page is made of ------------------------------------------------------------------


def test_page_refers_to_no_url(mixed_run: Result) -> None:
    summary = mixed_run.summary
    page = write_html_report(mixed_run.out, summary, timeline_for(summary)).read_text()
    assert "<script" not in page and "@import" not in page and " src=" not in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") or h == "data:," for h in hrefs)
    assert set(re.findall(r"url\((.)", page)) == {"#"}
    # "http" only in XML namespace names, which are identifiers, never fetched
    for match in re.finditer(r"https?://", page):
        assert re.search(r'xmlns(:\w+)?="$', page[: match.start()]), page[match.start() - 40 :][:80]
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # the charts' definitions never collide
    assert "Content-Security-Policy" in page


def test_long_failure_list_is_capped_and_says_how_many_more(tmp_path: Path) -> None:
    failed = TABLE_ROWS + 203
    outcomes = [
        Outcome(
            row=i + 2,
            status=Status.FAILED,
            org_id=ORG,
            asset_id=f"a-{i:05d}",
            error_class=ErrorClass.DEVICE_NOT_FOUND,
            error_code=11404,
            error_message="The device does not exist",
            attempts=1,
            duration_ms=5 + i % 40,
        )
        for i in range(failed)
    ]
    page = page_of(tmp_path, outcomes, exit_code=1)
    assert page.count("<td>device_not_found</td><td>11404</td>") == TABLE_ROWS
    assert "<td>a-00999</td>" in page and "<td>a-01000</td>" not in page
    assert "… and 203 more (all of them are in report.csv)" in page
    assert f"<h2>Failed devices ({failed:,})</h2>" in page
    assert "Too short a run for a timeline" in page
    assert page.count("<svg") == 3  # status, error class, latency: no timeline, nothing renewed
    assert "No renewed device with a requested validity" in page


def page_of(out: Path, outcomes: list[Outcome], *, exit_code: int) -> str:
    """report.html of a run that reported `outcomes` (no timeline), cells as plain `<td>`."""
    with ReportWriter(out) as writer:
        for outcome in outcomes:
            writer.write(outcome)
    finish_reports(out)
    summary = Summary(
        counts_by_status=writer.counts_by_status,
        counts_by_class=writer.counts_by_class,
        devices=len(outcomes),
        requests=len(outcomes),
        started=summary_time(0),
        finished=summary_time(30),
        configured_rate=50,
        exit_code=exit_code,
    )
    return write_html_report(out, summary, []).read_text().replace("<td class=n>", "<td>")


def summary_time(seconds: int) -> datetime:
    return datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def test_timeline_rates_are_per_second_deltas_between_samples() -> None:
    samples = [
        Sample(at=0.0, finished=0, renewed=0, failed=0, requests=0, throttled=0),
        Sample(at=1.0, finished=10, renewed=9, failed=1, requests=12, throttled=2),
        Sample(at=3.0, finished=50, renewed=48, failed=2, requests=56, throttled=2),
        Sample(at=3.0, finished=50, renewed=48, failed=2, requests=56, throttled=2),  # closing
        Sample(at=3.5, finished=51, renewed=49, failed=2, requests=60, throttled=5),
    ]
    rates = [(i.start, i.end, i.finished_per_s, i.throttled_per_s) for i in timeline_rates(samples)]
    assert rates == [(0.0, 1.0, 10.0, 2.0), (1.0, 3.0, 20.0, 0.0), (3.0, 3.5, 2.0, 6.0)]
    assert timeline_rates(samples[:1]) == []


def test_an_aborted_sandbox_run_says_so_and_escapes_the_reason() -> None:
    summary = Summary(
        counts_by_status={Status.RENEWED: 3, Status.FAILED: 5},
        counts_by_class={ErrorClass.SERVER_ERROR: 5},
        devices=8,
        requests=20,
        started=summary_time(0),
        finished=summary_time(9),
        configured_rate=10,
        exit_code=3,
        aborted_reason="circuit breaker: 5 x <server_error>",
        sandbox=True,
    )
    page = render_page(summary, [], ReportRows())
    assert "Sandbox run: no real device was touched." in page
    assert "<td>Sandbox (built-in simulator)</td><td>yes</td>" in page
    assert "Exit code 3: the run aborted itself" in page
    assert "Aborted: circuit breaker: 5 x &lt;server_error&gt;" in page
    assert "<server_error>" not in page
    assert "No device was timed." in page


def test_renewals_without_a_requested_validity_are_shown_as_enos_default(tmp_path: Path) -> None:
    outcomes = [
        Outcome(
            row=i + 2,
            status=Status.RENEWED,
            org_id=ORG,
            asset_id=f"a-{i}",
            requested_days=requested,
            granted_days=365,
            clamped=False,
            duration_ms=5,
        )
        for i, requested in enumerate((None, None, 365))
    ]
    page = page_of(tmp_path, outcomes, exit_code=0)
    assert "<td>EnOS default</td><td>365</td><td>no</td><td>2</td>" in page
    assert "<td>365</td><td>365</td><td>no</td><td>1</td>" in page
