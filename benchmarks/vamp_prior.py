"""A VampPrior over full-covariance posteriors: its log density by pyrovae's one-product
path against torch's ``MultivariateNormal.log_prob``, with subnormal floats kept and
flushed.

    log p(z) = logsumexp_k log N(z; mu_k, L_k L_k^T) - log K

with K = 500 components in d = 40 (the published protocol's pseudo-inputs and latent
size), spread like trained posteriors (means ~ N(0, 2^2), scales 0.05 to 0.55), so that
most responsibilities are tiny and many of them subnormal in float32.

1. training: a batch of N = 100 values, forward and backward (gradients for z, the means
   and the Cholesky factors);
2. evaluation: 10,000 values shaped (100, 100, d) as one chunk of
   ``evaluate.log_likelihood`` holds them (draws x images), forward only.

``--checkpoint`` takes the components and the values from a ``vamp+full`` checkpoint of
``benchmarks/fashion_mnist.py`` instead: the trained VampPrior's 500 posteriors, and draws
from the guide on the first 100 Fashion-MNIST test images (the synthetic components leave
few responsibilities subnormal; trained ones many more, which is where flushing pays).

Each is timed four ways, in interleaved rounds: torch's path (``MultivariateNormal.log_prob``,
then ``torch.logsumexp``) and pyrovae's
(:func:`pyrovae.distributions.mixture.multivariate_normal_log_probs`, then
:func:`pyrovae.denormals.logsumexp`, as the VampPrior computes it), each with subnormals
kept and flushed (:mod:`pyrovae.denormals`; CPU only). Prints the median ms per call and
the ratios torch / pyrovae (above 1: pyrovae is faster).

    python benchmarks/vamp_prior.py [--device cuda] [--rounds 5] [--threads 1]
    python benchmarks/vamp_prior.py --checkpoint runs/fashion_vamp/vamp+full/checkpoint.pt
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

from pyrovae.denormals import flushed_denormals, logsumexp
from pyrovae.distributions.mixture import multivariate_normal_log_probs


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def components(k: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    scale = 0.05 + 0.5 * torch.rand(k, d, generator=generator)
    lower = (0.3 * scale.unsqueeze(-1) * torch.randn(k, d, d, generator=generator)).tril(-1)
    scale_tril = lower + torch.diag_embed(scale)
    loc = 2 * torch.randn(k, d, generator=generator)
    return loc.to(device), scale_tril.to(device)


def trained_components(path: str, device: str):
    """(loc, scale_tril, training values (100, d), evaluation values (100, 100, d)) from a
    ``vamp+full`` checkpoint of benchmarks/fashion_mnist.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fashion_mnist import bounds_of_checkpoint, build_pair

    from pyrovae import load_dataset
    from pyrovae.train import load_checkpoint
    from pyrovae.train.checkpoint import load_module_state

    saved = load_checkpoint(path)
    bounds = bounds_of_checkpoint(saved, "vamp+full")
    if bounds is None:
        raise SystemExit(f"{path} is not a vamp+full checkpoint of benchmarks/fashion_mnist.py")
    model, guide = build_pair("vamp+full", 784, bounds)
    load_module_state(model, saved.model)
    load_module_state(guide, saved.guide)
    with torch.no_grad():
        prior = model.prior.posterior(model.prior.pseudo_inputs)  # the K components
        images = load_dataset("fashion-mnist").test[:100]
        posterior = guide.posterior(torch.bernoulli(images))
        values = posterior.sample((101,))  # (101, 100, d)
    moved = [t.to(device) for t in (prior.loc, prior.scale_tril, values[0], values[1:])]
    return tuple(moved)


def subnormal_share(z, loc, scale_tril) -> float:
    """Share of the responsibilities softmax_k log N(z; mu_k, L_k L_k^T) that are subnormal
    in float32 (nonzero and below 1.18e-38)."""
    with torch.no_grad():
        weights = torch.softmax(multivariate_normal_log_probs(z, loc, scale_tril), -1)
    tiny = torch.finfo(torch.float32).tiny
    return ((weights > 0) & (weights < tiny)).float().mean().item()


def torch_log_probs(z, loc, scale_tril):
    return dist.MultivariateNormal(loc, scale_tril=scale_tril).log_prob(z.unsqueeze(-2))


def make_call(log_probs, reduce, z, loc, scale_tril, backward: bool):
    k = loc.shape[0]

    def call():
        if not backward:
            with torch.no_grad():
                return reduce(log_probs(z, loc, scale_tril), -1) - math.log(k)
        leaves = [t.detach().requires_grad_() for t in (z, loc, scale_tril)]
        log_p = reduce(log_probs(*leaves), -1) - math.log(k)
        log_p.sum().backward()

    return call


PATHS = {  # the K log densities, then their logsumexp
    "torch": (torch_log_probs, torch.logsumexp),
    "pyrovae": (multivariate_normal_log_probs, logsumexp),
}


def timed(call, repeats: int, device: str, flush: bool) -> float:
    with flushed_denormals(device) if flush else _kept():
        call()  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


class _kept:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(False)
    if args.checkpoint:
        loc, scale_tril, training, evaluation = trained_components(args.checkpoint, args.device)
        source = f"trained components from {args.checkpoint}"
    else:
        loc, scale_tril = components(args.components, args.latent_dim, args.device)
        generator = torch.Generator().manual_seed(1)
        training = torch.randn(args.batch, args.latent_dim, generator=generator)
        # as evaluate.log_likelihood holds them: (sample chunk, images, d)
        evaluation = torch.randn(args.eval_values // 100, 100, args.latent_dim, generator=generator)
        source = "synthetic components"
    cases = {"training": (training, True), "evaluation": (evaluation, False)}
    flushes = (False, True) if args.device == "cpu" else (False,)
    ratio = float("nan")
    k, d = loc.shape
    print(
        f"VampPrior log density: K = {k}, d = {d}, {source}, device {args.device}, torch "
        f"threads {torch.get_num_threads()}, {args.rounds} interleaved rounds"
    )
    for case, (z, backward) in cases.items():
        z = z.to(args.device)
        calls = {
            (path, flush): make_call(*PATHS[path], z, loc, scale_tril, backward)
            for path in PATHS
            for flush in flushes
        }
        times = {key: [] for key in calls}
        for _ in range(args.rounds):
            for (path, flush), call in calls.items():
                times[path, flush].append(timed(call, args.repeats, args.device, flush))
        what = "forward + backward" if backward else "forward"
        share = subnormal_share(z, loc, scale_tril)
        print(
            f"  {case}: values of shape {tuple(z.shape)}, {what}; subnormal "
            f"responsibilities {100 * share:.1f} %"
        )
        for (path, flush), values in times.items():
            mode = "subnormals flushed" if flush else "subnormals kept"
            print(f"    {path:8s} {mode:19s} {statistics.median(values):9.2f} ms")
        for flush in flushes:
            mode = "flushed" if flush else "kept"
            ratio = statistics.median(
                a / b for a, b in zip(times["torch", flush], times["pyrovae", flush], strict=True)
            )
            print(f"    ratio torch / pyrovae, subnormals {mode}: {ratio:.2f}")
        if args.device == "cpu":
            gain = statistics.median(
                a / b for a, b in zip(times["pyrovae", False], times["pyrovae", True], strict=True)
            )
            print(f"    ratio pyrovae kept / flushed: {gain:.2f}")
    return ratio


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--components", type=int, default=500, help="K pseudo-inputs")
    parser.add_argument("--latent-dim", type=int, default=40, help="d")
    parser.add_argument("--batch", type=int, default=100, help="training values")
    parser.add_argument(
        "--eval-values", type=int, default=10_000, help="evaluation values (a multiple of 100)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, default=3, help="calls per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--checkpoint", default=None, help="a vamp+full checkpoint of fashion_mnist.py"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
