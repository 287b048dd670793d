"""Time per SVI step of each guide family relative to ``diagonal``.

Same model (784-400-d decoder, Bernoulli likelihood; N(0, I) prior, or the uniform sphere
for vmf/power-spherical and Dirichlet(1) for dirichlet; ``--prior vamp`` puts a VampPrior
over each family's own posteriors instead), same encoder, same
minibatch (d = 40, batch 100 binarized Fashion-MNIST images by default; random binary
images of that size if the Debian package is missing), TraceMeanField_ELBO (analytic KL
where registered, Monte Carlo otherwise). Each family's step is timed twice: replaying a
recording of the loss (``fit``'s default for pyrovae's pairs; the von Mises-Fisher,
Dirichlet, Power Spherical and mixture draws record as custom operators) and as Python
(``jit=False``). All are timed interleaved, round by round, in one process; prints the
median ms/step of each, the ratio recorded / Python, and each family's recorded step
relative to diagonal's.

    python benchmarks/guide_families.py [--device cuda] [--rounds 15]
    python benchmarks/guide_families.py --prior vamp --families diagonal,full --protocol
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pyro

from guides import FAMILIES, build_guide
from models import build_vae
from pyrovae import supports
from pyrovae.report import format_table
from pyrovae.train import SVIStep

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runnable from any directory
from common import load_batch, time_steps  # noqa: E402
from fashion_mnist import build_pair  # noqa: E402


def own_prior(family: str) -> str:
    """N(0, I) for Gaussian families; the uniform sphere / Dirichlet(1) for the others."""
    support = supports.CATALOGUE["guide family"][family]
    return {"real_vector": "standard", "sphere": "sphere", "simplex": "dirichlet"}[support]


WAYS = {"recorded": None, "Python": False}  # SVIStep's jit: fit's default, and Python


def main(args: argparse.Namespace) -> list[dict]:
    pyro.set_rng_seed(args.seed)
    x, n_train, source = load_batch(args.batch_size, args.device)
    steps = {}
    for family in args.families:
        for way, jit in WAYS.items():
            pyro.set_rng_seed(args.seed)  # the same initial networks both ways
            prior = own_prior(family) if args.prior == "own" else args.prior
            if args.protocol:
                model, guide = build_pair(f"{prior}+{family}", 784)
            else:
                guide = build_guide(784, args.latent_dim, family, (args.hidden,))
                options = {"posterior": guide.posterior} if prior == "vamp" else {}
                model = build_vae(784, args.latent_dim, (args.hidden,), prior, **options)
            model, guide = model.to(args.device), guide.to(args.device)
            steps[family, way] = SVIStep(model, guide, args.objective, 1e-3, jit=jit)
    scale = n_train / args.batch_size

    def run(step):
        def call(batch, data_scale):
            with pyro.validation_enabled(False):
                return step(batch, data_scale)

        return call

    calls = {key: run(step) for key, step in steps.items()}
    times = {key: [] for key in calls}
    for call in calls.values():
        time_steps(call, x, scale, args.warmup, args.device)
    for _ in range(args.rounds):
        for key, call in calls.items():
            times[key].append(time_steps(call, x, scale, args.steps, args.device))
    median = {key: statistics.median(t) for key, t in times.items()}
    rows = []
    for family in args.families:
        recorded, python = median[family, "recorded"], median[family, "Python"]
        replayed = steps[family, "recorded"].replayed_total > 0
        rows.append(
            {
                "family": family,
                "ms/step recorded": 1e3 * recorded if replayed else float("nan"),
                "ms/step Python": 1e3 * python,
                "ratio recorded / Python": recorded / python if replayed else float("nan"),
                "ratio to diagonal": recorded / median["diagonal", "recorded"],
            }
        )
    networks = (
        "the Fashion-MNIST protocol's networks (gated 784-300-300-40)"
        if args.protocol
        else f"784-{args.hidden}-{args.latent_dim}"
    )
    print(
        f"SVI step per guide family: {networks}, batch "
        f"{args.batch_size}, {source} data, {args.objective}, device {args.device}, prior "
        f"{args.prior} "
        "(recorded: nan where the family's loss could not be recorded)"
    )
    print(format_table(rows, list(rows[0])))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", type=lambda s: s.split(","), default=sorted(FAMILIES))
    parser.add_argument("--objective", default="TraceMeanField_ELBO")
    parser.add_argument(
        "--prior",
        default="own",
        help="own (each family's: N(0, I), the uniform sphere, Dirichlet(1)) or a prior "
        "name for every family, e.g. vamp (500 pseudo-inputs)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="the pairs of benchmarks/fashion_mnist.py (gated 784-300-300, z = 40, its guide "
        "options) instead of --hidden and --latent-dim",
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "diagonal" not in args.families:
        parser.error("--families must include diagonal (the reference)")
    return args


if __name__ == "__main__":
    main(parse_args())
