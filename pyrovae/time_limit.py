"""Time limits for long loops (training epochs, blocks of a log p(x) evaluation): stop at a
boundary before a wall-clock budget runs out (a cluster job's wall time), so the work can
be resumed from what was saved."""

from __future__ import annotations

import statistics
import time

from pyrovae.errors import PyrovaeError


def check_time_limit(time_limit) -> None:
    """Refuse a ``time_limit`` that is not None or a number of seconds > 0."""
    if time_limit is None:
        return
    number = isinstance(time_limit, int | float) and not isinstance(time_limit, bool)
    if not (number and time_limit > 0):
        raise PyrovaeError(
            f"time_limit must be a number of seconds > 0 or None, got {time_limit!r}"
        )


def next_unit_ends_late(
    time_limit: float | None, started: float, unit_seconds: list[float]
) -> bool:
    """Whether one more unit of work, taking the mean of ``unit_seconds``, would end more
    than ``time_limit`` seconds after ``started`` (a ``time.perf_counter()`` reading).
    False without a limit and before the first unit: the first always runs."""
    if time_limit is None or not unit_seconds:
        return False
    return time.perf_counter() - started + statistics.mean(unit_seconds) > time_limit
