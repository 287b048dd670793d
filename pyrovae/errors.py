"""The library's one exception type for user mistakes, and closest-name suggestions.

``PyrovaeError`` subclasses ``ValueError`` so code that caught ``ValueError`` keeps working;
the CLI turns it into a one-line message and exit status 2. Its message says what is wrong
and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PyrovaeError(ValueError):
    """A mistake in what the user passed (a name, a shape, a value, a file): the message
    says what is wrong and what to do instead."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> PyrovaeError:
    """The error for a name that is not registered: the closest match, then every valid one.

    >>> str(unknown_name("prior", "vampp", ["standard", "vamp"]))
    "unknown prior 'vampp' (did you mean 'vamp'?); choose one of: standard, vamp"
    """
    valid = sorted(valid)
    return PyrovaeError(
        f"unknown {kind} {name!r}{did_you_mean(name, valid)}; choose one of: {', '.join(valid)}"
    )


class TrainingDiverged(FloatingPointError):
    """Training produced non-finite values or exploded; the pair was restored to the last
    good state (the start of the failing epoch) before this was raised."""
