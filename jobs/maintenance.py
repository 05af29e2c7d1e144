"""Cron entry point: renew what is due, from a TOML config, into a dated output folder.

    python -m jobs.maintenance --config /etc/fleet-renew/maintenance.toml

It reads the config, makes `{out_root}/YYYY-MM-DD` (today, local time: a rerun the same day
resumes from that folder's journal), deletes dated folders beyond the newest `keep`, and then
*becomes* `fleet-renew run ... --renew-within DAYS` (exec, same interpreter): the job's exit code,
signals and output are the job's own. Credentials come from ENOS_APP_KEY / ENOS_APP_SECRET in
the environment, as for the job.

An exclusive lock on the `{out_root}` folder itself (flock on its descriptor, not a lock file
that could be deleted) is held across the exec until the job ends, so a run that overlaps the
next day's (or a second cron line) stops at once with exit 75 instead of renewing the same
devices from two folders, and pruning never deletes a folder in use.

Config keys (paths relative to the config file's folder):

    inventory = "devices.csv"        # required
    out_root = "/var/lib/fleet-renew/maintenance"   # required
    renew_within = 30                # days; and/or renew_at_fraction = 0.67 (one is required)
    org = "o15444172373271"          # optional, else ENOS_ORG_ID or the inventory's orgId
    rate = 10                        # optional, requests per second
    key_mode = "reuse"               # optional
    api_url = "https://apim-ppe1.envisioniot.com"   # optional, else ENOS_API_URL
    keep = 30                        # dated folders kept, today's included
    start_from_last = true           # optional, see below (default false)
    extra_args = ["--concurrency", "16"]            # optional, more `fleet-renew run` options

Every run writes `inventory.next.csv` in its dated folder: the inventory with each device's
*current* certificate (certSn and notAfter after that run). Tonight's run should start from it,
not from the file the campaign began with, whose certSn are superseded once renewed. With
`start_from_last = true` this happens by itself: the run reads the newest earlier dated folder's
`inventory.next.csv`, unless `inventory` was modified after it (an operator's new export wins;
devices renewed since are then found superseded and followed to their current certificate, at
the cost of one List call each). Without it, refresh `inventory` from that file yourself, e.g.
after each run: `cp OUT_ROOT/$(date +%F)/inventory.next.csv devices.csv` (the file is written
atomically, so it is whole or absent). An unchanged inventory still works (the job follows each
device's current certificate), but costs a refused renew plus a List call per superseded device.

Exit codes: the job's (0, 1, 2, 3, 4, 130, 143); 2 also for a bad config; 75 when another
maintenance run holds the lock.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

EXIT_USAGE = 2
EXIT_LOCKED = 75  # sysexits EX_TEMPFAIL: try again later
NEXT_INVENTORY = "inventory.next.csv"  # what each run writes (batch.outputs.next_inventory)
DEFAULT_KEEP = 30
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")

# TOML key -> (accepted types, the `fleet-renew run` option it becomes; None: used here).
_KEYS: dict[str, tuple[tuple[type, ...], str | None]] = {
    "inventory": ((str,), None),
    "out_root": ((str,), None),
    "keep": ((int,), None),
    "extra_args": ((list,), None),
    "start_from_last": ((bool,), None),
    "renew_within": ((int, float), "--renew-within"),
    "renew_at_fraction": ((int, float), "--renew-at-fraction"),
    "org": ((str,), "--org"),
    "rate": ((int, float), "--rate"),
    "key_mode": ((str,), "--key-mode"),
    "api_url": ((str,), "--api-url"),
}
_REQUIRED = ("inventory", "out_root")
_DUE_KEYS = ("renew_within", "renew_at_fraction")


class ConfigError(Exception):
    """The config file is missing, unreadable or wrong (exit 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceConfig:
    """What one maintenance run needs, checked once."""

    inventory: Path
    out_root: Path
    keep: int = DEFAULT_KEEP
    options: tuple[tuple[str, str], ...] = ()  # (fleet-renew option, value), in table order
    extra_args: tuple[str, ...] = ()
    start_from_last: bool = False  # read the last run's inventory.next.csv when it is newer


def load_config(path: Path) -> MaintenanceConfig:
    """Read and validate the TOML config; relative paths are taken from its folder."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {path}: {exc}") from exc
    _check_keys(path, raw)
    extra = raw.get("extra_args", [])
    if not all(isinstance(arg, str) for arg in extra):
        raise ConfigError(f"config {path}: extra_args must be a list of strings")
    keep = raw.get("keep", DEFAULT_KEEP)
    if keep < 1:
        raise ConfigError(f"config {path}: keep must be at least 1")
    options = tuple(
        (option, str(raw[key]))
        for key, (_, option) in _KEYS.items()
        if option is not None and key in raw
    )
    return MaintenanceConfig(
        inventory=path.parent / raw["inventory"],
        out_root=path.parent / raw["out_root"],
        keep=keep,
        options=options,
        extra_args=tuple(extra),
        start_from_last=bool(raw.get("start_from_last", False)),
    )


def _check_keys(path: Path, raw: dict[str, object]) -> None:
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(f"config {path}: unknown keys {unknown}; known: {sorted(_KEYS)}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"config {path}: missing {missing}")
    if not any(key in raw for key in _DUE_KEYS):
        # Without a window every device would be renewed on every run.
        raise ConfigError(f"config {path}: set renew_within (days) or renew_at_fraction")
    for key, value in raw.items():
        types = _KEYS[key][0]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"config {path}: {key} must be {names}, not {value!r}")


def inventory_for(config: MaintenanceConfig, today: date) -> Path:
    """The inventory tonight's run reads: the configured one, or with `start_from_last` the
    newest earlier run's inventory.next.csv when it is newer than the configured file."""
    if not config.start_from_last:
        return config.inventory
    earlier = sorted(
        (child for child in config.out_root.iterdir() if _is_dated_before(child, today)),
        reverse=True,
    )
    for folder in earlier:
        candidate = folder / NEXT_INVENTORY
        if candidate.is_file():
            if candidate.stat().st_mtime >= config.inventory.stat().st_mtime:
                return candidate
            break
    return config.inventory


def run_argv(
    config: MaintenanceConfig, out_dir: Path, python: str, inventory: Path | None = None
) -> list[str]:
    """The `fleet-renew run` command line for one maintenance run (no secrets in it)."""
    source = inventory or config.inventory
    argv = [python, "-m", "batch", "run", str(source), "--out", str(out_dir)]
    for option, value in config.options:
        argv += [option, value]
    return [*argv, "--progress", "log", *config.extra_args]


def dated_folder(out_root: Path, today: date) -> Path:
    """Today's output folder, created if needed."""
    folder = out_root / today.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prune(out_root: Path, today: date, keep: int) -> list[Path]:
    """Delete the oldest dated folders so that `keep` remain, today's included; return them.

    Only folders named YYYY-MM-DD before today are candidates: anything else is not ours.
    """
    older = sorted(
        (child for child in out_root.iterdir() if _is_dated_before(child, today)),
        reverse=True,
    )
    doomed = older[keep - 1 :]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def _is_dated_before(path: Path, today: date) -> bool:
    if not path.is_dir() or not _DATED.fullmatch(path.name):
        return False
    try:
        return date.fromisoformat(path.name) < today
    except ValueError:
        return False


def take_lock(out_root: Path) -> int | None:
    """Lock the `out_root` folder for this run; the fd survives exec. None if another run holds
    it. The lock is on the folder's inode: deleting a file cannot release it."""
    fd = os.open(out_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.set_inheritable(fd, True)
    return fd


def main(
    argv: Sequence[str] | None = None,
    *,
    today: Callable[[], date] = date.today,
) -> int:
    """Prepare today's folder and exec the job; returns only on an error before the exec."""
    parser = argparse.ArgumentParser(prog="python -m jobs.maintenance", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="maintenance TOML file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config.out_root.mkdir(parents=True, exist_ok=True)
    if take_lock(config.out_root) is None:
        print(f"error: another maintenance run holds {config.out_root}", file=sys.stderr)
        return EXIT_LOCKED
    day = today()
    out_dir = dated_folder(config.out_root, day)
    for folder in prune(config.out_root, day, config.keep):
        print(f"maintenance: removed old output {folder}", file=sys.stderr)
    try:
        inventory = inventory_for(config, day)
    except OSError as exc:
        print(f"error: inventory {config.inventory}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    command = run_argv(config, out_dir, sys.executable, inventory)
    print(f"maintenance: {shlex.join(command)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(command[0], command)  # never returns: the job's exit code is ours


if __name__ == "__main__":
    sys.exit(main())
