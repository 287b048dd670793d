"""``pyrovae``: train and compare VAEs from the command line.

Every subcommand builds its pair from a :class:`~pyrovae.cli.spec.RunSpec`; user
mistakes (a PyrovaeError, a missing file) end the run with a one-line message and exit
status 2, any other failure with a one-line message and status 1; the traceback is shown
only with --verbose.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import traceback

from guides import FAMILIES
from models import LIKELIHOODS, MODELS, PRIORS
from pyrovae.data import BINARIZE_MODES, DATASETS
from pyrovae.errors import PyrovaeError, unknown_name
from pyrovae.nn import HIDDEN_LAYERS
from pyrovae.train import OBJECTIVES

from . import compare as compare_command
from . import tables
from . import train as train_command
from .flags import add_option_flags, parse_int_tuple


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, refused with the reason otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
    return value


def one_of(registry, kind: str):
    """An argparse type: one registered name, refused with the closest match otherwise."""

    def parse(text: str) -> str:
        if text not in registry:
            raise argparse.ArgumentTypeError(str(unknown_name(kind, text, registry)))
        return text

    return parse


def _choices(registry, kind: str) -> dict:
    """``type=`` and ``metavar=`` for a flag taking one registered name."""
    return {"type": one_of(registry, kind), "metavar": "{" + ",".join(sorted(registry)) + "}"}


def _names(registry, kind: str):
    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in registry]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                str(unknown_name(kind, (unknown or [text])[0], registry))
            )
        return names

    return parse


def add_spec_arguments(parser: argparse.ArgumentParser, single_pair: bool = True) -> None:
    """Flags that fill a RunSpec (data, model, guide) and a FitConfig (training)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="digits",
        **_choices(DATASETS, "dataset"),
        help="digits: sklearn's 8x8 digits (embedded); fashion-mnist: Debian's IDX files; "
        "mnist/idx: IDX files in --data-dir; npz: arrays in --data-path",
    )
    data.add_argument(
        "--data-dir", default=None, help="folder with the IDX files of --dataset mnist/idx"
    )
    data.add_argument("--data-path", default=None, help=".npz file for --dataset npz")
    data.add_argument(
        "--num-validation",
        type=at_least(1),
        default=None,
        help="training images held out for validation (when not given: 225 for digits, "
        "10000 for IDX data sets)",
    )
    data.add_argument(
        "--binarize",
        default="dynamic",
        **_choices(BINARIZE_MODES, "binarize mode"),
        help="dynamic: a fresh Bernoulli draw of every training batch (the published "
        "protocol); static: one fixed draw; none: keep gray levels",
    )
    pair = parser.add_argument_group("model and guide")
    pair.add_argument(
        "--model", default="vae", **_choices(MODELS, "model"), help="generative model"
    )
    pair.add_argument(
        "--labels-per-class",
        type=at_least(1),
        default=10,
        help="labelled training images per class for semi-supervised models (m2)",
    )
    if single_pair:
        pair.add_argument(
            "--guide",
            default="diagonal",
            **_choices(FAMILIES, "guide family"),
            help="guide family q(z|x)",
        )
        pair.add_argument(
            "--prior", default="standard", **_choices(PRIORS, "prior"), help="prior p(z)"
        )
    else:
        pair.add_argument(
            "--priors",
            type=_names(PRIORS, "prior"),
            default=["standard"],
            help="comma-separated priors; every compatible prior x guide pair is trained",
        )
        pair.add_argument(
            "--guides",
            type=_names(FAMILIES, "guide family"),
            default=["diagonal", "full"],
            help="comma-separated guide families",
        )
    pair.add_argument(
        "--likelihood",
        default="bernoulli",
        **_choices(LIKELIHOODS, "likelihood"),
        help="p(x|z) per pixel",
    )
    pair.add_argument("--latent-dim", type=at_least(1), default=10, help="d, the size of z")
    pair.add_argument(
        "--hidden",
        type=parse_int_tuple,
        default=(256,),
        help="hidden layer widths of encoder and decoder, e.g. 300,300",
    )
    pair.add_argument(
        "--activation",
        default="relu",
        **_choices(HIDDEN_LAYERS, "activation"),
        help="hidden layers (gated: the gated dense layers of Tomczak & Welling)",
    )
    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--objective",
        default="Trace_ELBO",
        **_choices(OBJECTIVES, "objective"),
        help="training objective (IWAE uses --num-particles as K)",
    )
    fit.add_argument("--epochs", type=at_least(1), default=50, help="passes over the training set")
    fit.add_argument("--batch-size", type=at_least(1), default=100, help="minibatch size")
    fit.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    fit.add_argument(
        "--warmup-epochs",
        type=at_least(0),
        default=0,
        help="epochs over which the KL weight rises linearly to 1",
    )
    fit.add_argument(
        "--patience",
        type=at_least(1),
        default=None,
        help="stop after this many epochs without a better validation ELBO and keep the best "
        "epoch's parameters (off when not given)",
    )
    fit.add_argument(
        "--num-particles", type=at_least(1), default=1, help="samples of z per data point"
    )
    fit.add_argument(
        "--seed",
        type=at_least(0),
        default=0,
        help="seeds networks, batches and binarization: the same seed gives the same result",
    )
    fit.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    fit.add_argument(
        "--time-limit",
        type=positive_float,
        default=None,
        help="seconds: stop at an epoch boundary before this much time has passed (a job's "
        "wall time); --resume continues from the checkpoint (no limit when not given)",
    )
    fit.add_argument(
        "--on-nan",
        default="raise",
        choices=("raise", "rollback"),
        help="when an epoch goes non-finite or diverges: stop with an error, or restore "
        "the epoch's start, halve the learning rate and run it again",
    )
    fit.add_argument(
        "--jit",
        default="auto",
        choices=("auto", "on", "off"),
        help="record the loss once per batch shape and replay it without Pyro's per-step "
        "Python (Trace_ELBO, TraceMeanField_ELBO, IWAE; the same training): on, off, or "
        "auto = record where the pair allows it and run Python otherwise",
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    fit.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training under torchrun: torchrun --nproc-per-node N -m "
        "pyrovae.cli train --distributed ... (each global batch split across processes)",
    )
    add_option_flags(parser)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (unless it has none) and keeps descriptions' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def plain(text: str | None) -> str:
    """A docstring as plain text for --help: reST roles and double backticks removed."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], text or "")
    return text.replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    epilog = "\n".join(
        [
            "registered:",
            f"  datasets:    {', '.join(DATASETS)}",
            f"  models:      {', '.join(sorted(MODELS))}",
            f"  guides:      {', '.join(sorted(FAMILIES))}",
            f"  priors:      {', '.join(sorted(PRIORS))}",
            f"  likelihoods: {', '.join(sorted(LIKELIHOODS))}",
            f"  objectives:  {', '.join(sorted(OBJECTIVES))}",
        ]
    )
    parser = argparse.ArgumentParser(
        prog="pyrovae",
        description=__doc__.splitlines()[0],
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser(
        "train",
        help="train one model/guide pair",
        description=plain(train_command.__doc__),
        formatter_class=HelpFormatter,
    )
    add_spec_arguments(train_parser)
    train_parser.add_argument("--out", default="runs/train", help="output folder")
    train_parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    train_parser.add_argument(
        "--override",
        default=None,
        type=lambda text: [n for n in text.split(",") if n],
        help="settings a resumed run changes on purpose, comma-separated FitConfig or spec "
        "names (e.g. learning_rate); other differences from the checkpoint are refused",
    )
    train_parser.set_defaults(run=train_command.run)

    compare_parser = sub.add_parser(
        "compare",
        help="train and evaluate several guides",
        description=plain(compare_command.__doc__),
        formatter_class=HelpFormatter,
    )
    add_spec_arguments(compare_parser, single_pair=False)
    compare_parser.add_argument(
        "--num-samples",
        type=at_least(1),
        default=5000,
        help="importance samples per image for log p(x)",
    )
    compare_parser.add_argument(
        "--diag-samples",
        type=at_least(25),
        default=1000,
        help="guide draws per image for the DataTree and PSIS",
    )
    compare_parser.add_argument(
        "--eval-points",
        type=at_least(2),
        default=500,
        help="test images for the KL decomposition and DataTree",
    )
    compare_parser.add_argument("--out", default="runs/compare", help="output folder")
    compare_parser.set_defaults(run=compare_command.run)
    registry_parser = sub.add_parser(
        "registry",
        help="print the priors, guide families and their compatibility as markdown",
        description=plain(tables.__doc__),
        formatter_class=HelpFormatter,
    )
    registry_parser.set_defaults(run=tables.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except (PyrovaeError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        # a user mistake: say what to change
        print(f"pyrovae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # anything else: one line, the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        first = str(error).splitlines()[0] if str(error) else ""
        print(
            f"pyrovae {args.command}: error: {type(error).__name__}: {first} "
            "(run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
