"""Unique parameter-store names, so two models in one process never share parameters.

Pyro keys ``pyro.module(name, module)`` parameters by ``name``: two instances that
register the same name silently share (and overwrite) each other's weights (Pyro issues
#1488, #3209). Every model and guide in pyrovae takes a name from here unless given one.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

_counters: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def unique_name(prefix: str) -> str:
    """``prefix_0``, ``prefix_1``, ... : a fresh name for each call in this process."""
    return f"{prefix}_{next(_counters[prefix])}"
