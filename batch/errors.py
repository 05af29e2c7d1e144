"""Batch-level errors: problems that stop the whole run, each with its exit code.

    BatchError (exit 1)
    ├── UsageError      (exit 2)  bad option or configuration
    ├── InventoryError  (exit 2)  inventory missing, empty, unreadable or without the columns
    └── AbortedError    (exit 3)  the run stopped itself: authentication refused, circuit breaker
                                  (an inventory that became unreadable mid-run is reported so too)

A single device's failure is never one of these: it is an `Outcome` in the report.
"""

from __future__ import annotations


class BatchError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(BatchError):
    exit_code = 2


class InventoryError(BatchError):
    exit_code = 2


class AbortedError(BatchError):
    exit_code = 3
