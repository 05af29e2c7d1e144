"""The plan stage: decide, before anything is sent, what a run does with each row.

decide   pure decisions per row: renew, skip (done earlier, outside the shard, duplicate), invalid
preview  the `plan` command: what a run would do, sending nothing
saved    saved plans: `plan --save` records what was reviewed, `run --plan` refuses anything else
"""

__all__ = ["decide", "preview", "saved"]
