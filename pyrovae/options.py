"""One way to pass hyperparameters: a builder's keyword options, read from its signature.

Every registered prior, guide family and likelihood is a class whose ``__init__`` takes
its sizes first (``latent_dim``, ``in_features``, ...) and then keyword options with
defaults (``num_components=10``, ``rank=2``). :func:`builder_options` lists those options
with their defaults and types; the CLI turns each into a flag ``--<name>-<option>`` and a
run specification stores the chosen values as a plain ``{option: value}`` dictionary. So a
new prior or family needs no CLI or spec code of its own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from pyrovae.errors import PyrovaeError, did_you_mean


@dataclass(frozen=True)
class Option:
    """A keyword option of a builder: its name, default and the Python type of values."""

    name: str
    default: Any
    kind: type  # int, float, bool, str or tuple (of ints)


SIMPLE_TYPES = (bool, int, float, str, tuple)


def builder_options(builder, skip: tuple[str, ...] = ()) -> list[Option]:
    """Keyword options of ``builder.__init__`` (or of a function) that have a simple
    default; parameters named in ``skip`` (sizes and context such as ``latent_dim``,
    ``posterior``) and options defaulting to ``None`` are left out."""
    target = builder.__init__ if inspect.isclass(builder) else builder
    options = []
    for parameter in list(inspect.signature(target).parameters.values())[1:]:
        if parameter.name in skip or parameter.default is inspect.Parameter.empty:
            continue
        kind = type(parameter.default)
        if kind in SIMPLE_TYPES:
            options.append(Option(parameter.name, parameter.default, kind))
    return options


def check_options(what: str, builder, given: dict, skip: tuple[str, ...] = ()) -> None:
    """``ValueError`` naming the valid options if ``given`` has one ``builder`` lacks."""
    valid = {o.name for o in builder_options(builder, skip)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise PyrovaeError(
            f"{what} has no option {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], valid)}; its options are {sorted(valid) or 'none'}"
        )
