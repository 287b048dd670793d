"""Command-line flags generated from the registries' keyword options.

Every option of every registered model, prior and guide family becomes one flag:
``--model-<name>-<option>``, ``--prior-<name>-<option>`` and ``--guide-<name>-<option>``
(underscores as dashes), e.g. ``--model-hvae-bottom-dim 20``,
``--prior-vamp-num-pseudo-inputs 500``, ``--guide-lowrank-rank 4``. A flag left unset keeps
the builder's default, shown in ``--help``. Registering a new prior or family adds its
flags with no code here.
"""

from __future__ import annotations

import argparse

from guides import FAMILIES, family_options
from models import MODELS, PRIORS, prior_options
from pyrovae.errors import PyrovaeError
from pyrovae.options import Option, builder_options

from .spec import MODEL_ARGS


def model_options(name: str) -> list[Option]:
    return builder_options(MODELS[name], skip=MODEL_ARGS)


KINDS = {
    "model": (MODELS, model_options),
    "prior": (PRIORS, prior_options),
    "guide": (FAMILIES, family_options),
}


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


PARSERS = {bool: parse_bool, int: int, float: float, str: str, tuple: parse_int_tuple}


def flag(kind: str, name: str, option: Option) -> str:
    return f"--{kind}-{name}-{option.name}".replace("_", "-")


def dest(kind: str, name: str, option: Option) -> str:
    return f"{kind}_option__{name}__{option.name}"


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One argument group per prior and per guide family that has options."""
    for kind, (registry, options_of) in KINDS.items():
        for name in sorted(registry):
            options = options_of(name)
            if not options:
                continue
            group = parser.add_argument_group(f"{kind} {name!r} options")
            for option in options:
                default = (
                    ",".join(map(str, option.default)) if option.kind is tuple else option.default
                )
                group.add_argument(
                    flag(kind, name, option),
                    dest=dest(kind, name, option),
                    type=PARSERS[option.kind],
                    default=None,
                    metavar=option.kind.__name__.upper(),
                    help=f"{kind} {name!r}: {option.name} (when not given: {default})",
                )


def chosen_options(args: argparse.Namespace, kind: str, names: list[str]) -> dict[str, dict]:
    """``{name: {option: value}}`` of the flags set for the ``names`` in use; a flag set
    for a prior or family that is not in use is an error (it would silently do nothing)."""
    registry, options_of = KINDS[kind]
    chosen: dict[str, dict] = {name: {} for name in names}
    for name in registry:
        for option in options_of(name):
            value = getattr(args, dest(kind, name, option), None)
            if value is None:
                continue
            if name not in chosen:
                raise PyrovaeError(
                    f"{flag(kind, name, option)} sets an option of {kind} {name!r}, which this "
                    f"run does not use ({kind}: {', '.join(names)})"
                )
            chosen[name][option.name] = value
    return chosen
