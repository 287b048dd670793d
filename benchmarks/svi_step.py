"""One SVI step of the pyrovae pair vs a hand-written PyTorch ELBO step.

Both steps use the same networks (784-400-d, d = 50 by default), the same minibatch of
128 binarized Fashion-MNIST images (random binary images of that size if the Debian
package is missing), a reparameterized draw of z, the analytic Gaussian KL, and Adam.
pyrovae's step uses PyTorch's fused Adam kernel (``pyrovae.train.step.make_adam``); the
hand-written step is timed twice, with ``torch.optim.Adam``'s default implementation
(what a PyTorch user writes) and with the same fused kernel (so the ratio is the cost of
Pyro's machinery alone). pyrovae's step is timed as Python runs the pair and with
``jit=True`` (its loss recorded once and replayed, :mod:`pyrovae.train.traced`). All run
interleaved in one process; the script prints the median time per step of each and the
median over rounds of the per-round ratios (pyrovae / reference; lower is better).

    python benchmarks/svi_step.py [--device cuda] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pyro
import torch

from guides import build_guide
from models import build_vae
from pyrovae.train import SVIStep

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runnable from any directory
from common import (  # noqa: E402
    HandWrittenVAE,
    hand_written_references,
    load_batch,
    print_paired_ratios,
    time_steps,
)


class ReferenceStep(HandWrittenVAE):
    """The same ELBO written by hand: -sum_n [log p(x_n|z_n) - KL(q(z|x_n) || N(0, I))] N/B."""

    def __call__(self, x: torch.Tensor, data_scale: float) -> float:
        loss = data_scale * self.negative_elbo(x)
        self.step(loss)
        return loss.item()


def main(args: argparse.Namespace) -> float:
    pyro.set_rng_seed(args.seed)
    x, n_train, source = load_batch(args.batch_size, args.device)
    model = build_vae(784, args.latent_dim, (args.hidden,)).to(args.device)
    guide = build_guide(784, args.latent_dim, "diagonal", (args.hidden,)).to(args.device)
    references = hand_written_references(ReferenceStep, model, guide, args.lr)
    scale = n_train / args.batch_size

    def pyrovae_call(jit: bool):  # both variants train the same networks: same work per step
        step = SVIStep(model, guide, "TraceMeanField_ELBO", args.lr, jit=jit)

        def call(batch, data_scale):
            with pyro.validation_enabled(False):  # as inside fit(), after its input checks
                return step(batch, data_scale)

        return call

    ours = {"pyrovae": pyrovae_call(False), "pyrovae, jit": pyrovae_call(True)}
    steps = {**ours, **references}
    times = {name: [] for name in steps}
    for step in steps.values():
        time_steps(step, x, scale, args.warmup, args.device)
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(time_steps(step, x, scale, args.steps, args.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"SVI step (TraceMeanField_ELBO), 784-{args.hidden}-{args.latent_dim}, batch "
        f"{args.batch_size}, {source} data, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, {args.rounds} interleaved rounds of {args.steps} steps"
    )
    for name, seconds in median.items():
        print(f"  {name + ':':38s} {seconds * 1e3:.3f} ms/step")
    ratios = print_paired_ratios(times, list(ours), list(references))
    return ratios["pyrovae, jit"]["hand-written, fused Adam"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
