"""Progress lines for logs (cron, Airflow): counts, rate and an ETA."""

from __future__ import annotations

from batch.clock import FakeClock
from batch.model import Outcome, Status
from batch.run.progress import Progress


def test_log_line_counts_states_and_estimates_the_rest() -> None:
    clock = FakeClock()
    progress = Progress(mode="log", total=100, clock=clock)
    for status in [Status.RENEWED] * 8 + [Status.FAILED, Status.INVALID]:
        progress.update(Outcome(row=2, status=status))
    clock.now += 5
    line = progress.line()
    assert line.startswith("progress: 10/100 rows")
    assert "renewed=8 failed=1 invalid=1 skipped=0" in line
    assert "2.0 rows/s" in line and "eta 45s" in line
    progress.close()


def test_auto_mode_without_a_terminal_logs_lines() -> None:
    progress = Progress(mode="auto")  # pytest captures stderr: not a terminal
    assert progress.mode == "log"
    progress.close()
