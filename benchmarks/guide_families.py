"""Time per SVI step of each guide family relative to ``diagonal``.

Same model (784-400-d decoder, Bernoulli likelihood; N(0, I) prior, or the uniform sphere
for vmf/power-spherical and Dirichlet(1) for dirichlet), same encoder, same
minibatch (d = 40, batch 100 binarized Fashion-MNIST images by default; random binary
images of that size if the Debian package is missing), TraceMeanField_ELBO (analytic KL
where registered, Monte Carlo otherwise). Families are timed interleaved, round by round,
in one process; prints median ms/step and the ratio to diagonal.

    python benchmarks/guide_families.py [--device cuda] [--rounds 15]
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


def own_prior(family: str) -> str:
    """N(0, I) for Gaussian families; the uniform sphere / Dirichlet(1) for the others."""
    support = supports.CATALOGUE["guide family"][family]
    return {"real_vector": "standard", "sphere": "sphere", "simplex": "dirichlet"}[support]


def main(args: argparse.Namespace) -> list[dict]:
    pyro.set_rng_seed(args.seed)
    x, n_train, source = load_batch(args.batch_size, args.device)
    steps = {}
    for family in args.families:
        guide = build_guide(784, args.latent_dim, family, (args.hidden,)).to(args.device)
        model = build_vae(784, args.latent_dim, (args.hidden,), own_prior(family))
        model = model.to(args.device)
        steps[family] = SVIStep(model, guide, args.objective, 1e-3)
    scale = n_train / args.batch_size

    def run(step):
        def call(batch, data_scale):
            with pyro.validation_enabled(False):
                return step(batch, data_scale)

        return call

    calls = {family: run(step) for family, step in steps.items()}
    times = {family: [] for family in calls}
    for call in calls.values():
        time_steps(call, x, scale, args.warmup, args.device)
    for _ in range(args.rounds):
        for family, call in calls.items():
            times[family].append(time_steps(call, x, scale, args.steps, args.device))
    base = statistics.median(times["diagonal"])
    rows = [
        {
            "family": family,
            "ms/step": 1e3 * statistics.median(t),
            "ratio to diagonal": statistics.median(t) / base,
        }
        for family, t in times.items()
    ]
    print(
        f"SVI step per guide family: 784-{args.hidden}-{args.latent_dim}, batch "
        f"{args.batch_size}, {source} data, {args.objective}, device {args.device}"
    )
    print(format_table(rows, ["family", "ms/step", "ratio to diagonal"]))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", type=lambda s: s.split(","), default=sorted(FAMILIES))
    parser.add_argument("--objective", default="TraceMeanField_ELBO")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent-dim", type=int, default=40)
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
