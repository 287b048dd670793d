"""A whole ``fit`` epoch vs a hand-written PyTorch epoch doing the same work.

Both run the Fashion-MNIST protocol network (gated dense 784-300-300 encoder and decoder,
z = 40, diagonal Gaussian guide, Bernoulli likelihood, analytic KL) on the same data:
shuffle, a fresh Bernoulli draw of every training batch (dynamic binarization), the
N/B-scaled negative ELBO, backward, Adam, then the validation ELBO. pyrovae runs
``fit(..., objective="TraceMeanField_ELBO", epochs=E)``, whose Adam is PyTorch's fused
kernel; the reference is the loop a PyTorch user would write, reading the loss once per
epoch, timed with ``torch.optim.Adam``'s default implementation and with the same fused
kernel (that ratio is the cost of Pyro and of fit's checks alone). pyrovae is timed twice:
with fit's default, which for pyrovae's own pair records the loss once per batch shape and
replays it (:mod:`pyrovae.train.traced`; each recording compared with the Python loss
again at every epoch's start), and with ``jit=False``, as Python runs the pair on every
step (the default for a pair of the user's own). Rounds are interleaved in one process; the script
prints the median seconds per epoch of each, the median over rounds of the per-round ratios
(pyrovae / reference; 1.0 = no overhead), and apart the per-fit setup cost: the call's time
outside its epochs (input checks, probes, the objective's check). fit's per-epoch seconds
are its own record of each whole epoch (``FitHistory.epoch_seconds``: steps, validation,
state capture and checks), the first epoch left out (it records the loss); the references
time E - 1 epochs each.

Without Debian's dataset-fashion-mnist it uses random gray images of the same shape.
``--features 16 --hidden 8`` (random data) leaves almost no arithmetic: what is timed is
then the Python work per step and per epoch, which on a GPU is most of a short epoch.

    python benchmarks/fit_epoch.py [--batch-size 1024] [--device cuda] [--rounds 5]
    python benchmarks/fit_epoch.py --features 16 --hidden 8 --latent-dim 2 --batch-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

from guides import build_guide
from models import build_vae
from pyrovae import fit
from pyrovae.data import FASHION_MNIST_DIR, load_dataset, make_splits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runnable from any directory
from common import (  # noqa: E402
    HandWrittenVAE,
    hand_written_references,
    print_paired_ratios,
    synchronize,
)


def load_splits(train_size: int, validation_size: int, features: int = 784):
    if features == 784 and (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        data = load_dataset("fashion-mnist")
        train, validation, source = data.train, data.validation, "Fashion-MNIST"
    else:
        generator = torch.Generator().manual_seed(0)
        train = torch.rand(50_000, features, generator=generator)
        validation = torch.rand(10_000, features, generator=generator)
        source = "random"
    splits = make_splits("bench", train[:train_size], validation[:validation_size], None)
    return splits, source


class ReferenceEpoch(HandWrittenVAE):
    """The same epoch written by hand with the same networks and the same optimizer."""

    def __call__(self, splits, batch_size: int) -> float:
        train = splits.train
        n = train.shape[0]
        order = torch.randperm(n).to(train.device)
        total = train.new_zeros(())
        for start in range(0, n, batch_size):
            x = torch.bernoulli(train[order[start : start + batch_size]])
            loss = self.negative_elbo(x) * (n / x.shape[0])
            self.step(loss)
            total += loss.detach() * x.shape[0] / n
        with torch.no_grad():
            validation = sum(
                self.negative_elbo(splits.validation[s : s + 1000])
                for s in range(0, splits.validation.shape[0], 1000)
            )
        return (-total / n).item() - validation.item()  # one host sync per epoch


def timed(function, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    splits, source = load_splits(args.train_size, args.validation_size, args.features)
    splits = splits.to(args.device)
    hidden, features = tuple(args.hidden), args.features
    model = build_vae(features, args.latent_dim, hidden, activation="gated").to(args.device)
    guide = build_guide(features, args.latent_dim, "diagonal", hidden, "gated").to(args.device)
    references = hand_written_references(ReferenceEpoch, model, guide, args.lr)
    config = dict(
        objective="TraceMeanField_ELBO",
        batch_size=args.batch_size,
        learning_rate=args.lr,
        device=args.device,
        progress=False,
    )

    variants = {"pyrovae fit (default)": None, "pyrovae fit, jit=False": False}

    def run_fit(epochs: int, jit: bool | None):
        return fit(model, guide, splits, epochs=epochs, jit=jit, **config)

    def run_reference(reference) -> float:
        return timed(lambda: reference(splits, args.batch_size), args.device)

    for jit in variants.values():  # warm-up: allocator, lazy init
        run_fit(1, jit)
    for reference in references.values():
        run_reference(reference)
    per_epoch = {name: [] for name in (*variants, *references)}
    setup = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, jit in variants.items():
            start = time.perf_counter()
            history = run_fit(args.epochs, jit)
            synchronize(args.device)
            seconds = time.perf_counter() - start
            # fit's own timing of each whole epoch (steps, validation, checks); the first
            # is left out: it records the loss
            per_epoch[name].append(statistics.mean(history.epoch_seconds[1:]))
            setup[name].append(seconds - sum(history.epoch_seconds))
        for name, reference in references.items():
            times = [run_reference(reference) for _ in range(args.epochs - 1)]
            per_epoch[name].append(statistics.mean(times))
    median = {name: statistics.median(values) for name, values in per_epoch.items()}
    print(
        f"fit epoch: gated {'-'.join(map(str, (features, *hidden)))}, z = {args.latent_dim}, "
        f"batch {args.batch_size}, "
        f"{splits.train.shape[0]} training + {splits.validation.shape[0]} validation "
        f"{source} images, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} interleaved rounds"
    )
    for name in per_epoch:
        print(f"  {name + ', per epoch:':40s} {median[name]:.3f} s")
    for name in variants:
        label = f"{name} setup per call:"
        print(f"  {label:40s} {statistics.median(setup[name]):.3f} s")
    ratios = print_paired_ratios(per_epoch, list(variants), list(references))
    return ratios["pyrovae fit (default)"]["hand-written, fused Adam"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    parser.add_argument("--latent-dim", type=int, default=40, help="d")
    parser.add_argument(
        "--features",
        type=int,
        default=784,
        help="data dimension (not 784: random images); small --features and --hidden leave "
        "little arithmetic, so the epoch measures Python work per step and per epoch, the "
        "cost that dominates short epochs on a GPU",
    )
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=[300, 300], help="gated hidden layer widths"
    )
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    parser.add_argument("--train-size", type=int, default=10_000, help="training images")
    parser.add_argument("--validation-size", type=int, default=2_000, help="validation images")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed fit call (>= 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        sys.exit("--epochs must be >= 2: the first epoch of each fit call is left out")
    return args


if __name__ == "__main__":
    main(parse_args())
