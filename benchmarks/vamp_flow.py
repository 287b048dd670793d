"""A VampPrior over a flow guide at the published size: one ELBO step, three ways.

The protocol's pair (gated 784-300-300 encoder and decoder, d = 40, K = 500 pseudo-inputs,
two affine autoregressive flows with 64 hidden units). Each step draws z from the guide
and scores it under all K pseudo-input posteriors, so the flows' density is evaluated at
B x K points:

1. ``pyro iaf``: Pyro's ``conditional_affine_autoregressive`` (what the flow family used
   before :mod:`guides.flows`), IAF direction: each score inverts the flows, d sequential
   passes over B x K points with the context copied to each;
2. ``pyrovae iaf``: the same functions and parameters through :mod:`guides.flows` (context
   term once per component, fixed-point inverse);
3. ``pyrovae maf``: ``direction="maf"``: one pass per flow for any z, the d passes only
   to draw the batch.

Prints, per way, the median milliseconds of a forward and backward pass of
``TraceMeanField_ELBO`` over interleaved rounds and the MiB autograd saved for the
backward pass, then the ratios ``pyro iaf`` / each (above 1: that much faster, that much
less saved).
The batch is small by default (B = 10) because ``pyro iaf`` keeps d passes over B x K
points: at the protocol's B = 100 it passed 24 GB.

    python benchmarks/vamp_flow.py [--batch-size 10] [--rounds 5] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from pyro.infer import TraceMeanField_ELBO

from guides import build_guide
from models import build_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runnable from any directory
from common import synchronize  # noqa: E402

WAYS = ("pyro iaf", "pyrovae iaf", "pyrovae maf")


def build(way: str, latent_dim: int, pseudo_inputs: int, device: str):
    """The pair of one way, all three with the same parameters (seed 0)."""
    pyro.set_rng_seed(0)
    direction = way.split()[-1]
    guide = build_guide(784, latent_dim, "flow", (300, 300), "gated", direction=direction)
    if way == "pyro iaf":
        state = guide.head.flows.state_dict()
        guide.head.flows = torch.nn.ModuleList(
            conditional_affine_autoregressive(latent_dim, 300, hidden_dims=[64])
            for _ in range(guide.head.num_flows)
        )
        guide.head.flows.load_state_dict(state)
    model = build_vae(
        784,
        latent_dim,
        (300, 300),
        "vamp",
        "bernoulli",
        "gated",
        prior_options={"num_pseudo_inputs": pseudo_inputs},
        posterior=guide.posterior,
    )
    return model.to(device), guide.to(device)


def step(model, guide, x, device: str) -> tuple[float, int]:
    """Seconds of one forward and backward pass, and the bytes saved for backward."""
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    synchronize(device)
    began = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    loss.backward()
    synchronize(device)
    return time.perf_counter() - began, saved


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument("--pseudo-inputs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    # the VampPrior's advice to use "maf" over the two "iaf" ways compared here on purpose
    logging.getLogger("models.priors").setLevel(logging.ERROR)
    pairs = {w: build(w, args.latent_dim, args.pseudo_inputs, args.device) for w in WAYS}
    x = torch.rand(args.batch_size, 784, generator=torch.Generator().manual_seed(1))
    x = x.bernoulli().to(args.device)
    seconds = {w: [] for w in WAYS}
    saved = {}
    with pyro.validation_enabled(False):
        for w in WAYS:  # warm-up
            step(*pairs[w], x, args.device)
        for _ in range(args.rounds):
            for w in WAYS:
                elapsed, saved[w] = step(*pairs[w], x, args.device)
                seconds[w].append(elapsed)
    print(
        f"VampPrior (K = {args.pseudo_inputs}) over a flow guide, d = {args.latent_dim}, "
        f"batch {args.batch_size}, {args.device}, {args.rounds} rounds"
    )
    median = {w: statistics.median(s) for w, s in seconds.items()}
    for w in WAYS:
        print(f"{w}: {1000 * median[w]:.1f} ms per step, {saved[w] / 2**20:.0f} MiB saved")
    for w in WAYS[1:]:
        print(
            f"{w}: time ratio pyro iaf / {w} {median['pyro iaf'] / median[w]:.2f}, "
            f"saved ratio {saved['pyro iaf'] / saved[w]:.1f}"
        )


if __name__ == "__main__":
    main()
