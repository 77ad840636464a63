"""Public ids: a type prefix plus a time-ordered hex string (48-bit milliseconds + 64 random bits)."""

from __future__ import annotations

import os
import time

HEX_DIGITS = 28  # after the prefix: 12 of milliseconds, 16 random


def new_id(prefix: str) -> str:
    """``job_0193f2…``: sorts by creation time, so the newest-first list can page by id."""
    millis = int(time.time() * 1000)
    return f"{prefix}_{millis:012x}{os.urandom(8).hex()}"
