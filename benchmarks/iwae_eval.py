"""``evaluate.log_likelihood`` vs a hand-written vectorized PyTorch IWAE estimate.

Both estimate log p(x) = log (1/S) sum_s p(x, z_s) / q(z_s | x) with S draws per image on
the same networks (the Fashion-MNIST protocol's gated 784-300-300 encoder and decoder,
z = 40, diagonal Gaussian guide, Bernoulli likelihood), in chunks of ``--sample-chunk``
draws x ``--batch-size`` images. Each method runs in its own child process (forked on
CPU, spawned on CUDA), so the peak resident memory it reports is its own. Prints images
per second of each, their ratio (pyrovae / reference; >= 1.0 means no slower), peak RSS,
and each mean estimate (different random draws: they differ by Monte Carlo noise).

    python benchmarks/iwae_eval.py [--num-samples 5000] [--images 200] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from guides import build_guide
from guides.families import positive
from models import build_vae
from pyrovae import evaluate
from pyrovae.data import FASHION_MNIST_DIR, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runnable from any directory
from common import synchronize  # noqa: E402


def test_images(count: int) -> tuple[torch.Tensor, str]:
    path = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if path.exists():  # only the test file: loading all splits would set the peak RSS
        images = torch.from_numpy(read_idx(path)[:count].reshape(count, -1) / 255.0).float()
        return torch.bernoulli(images, generator=torch.Generator().manual_seed(0)), "Fashion-MNIST"
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((count, 784), 0.3), generator=generator), "random"


@torch.no_grad()
def reference_log_likelihood(model, guide, x, num_samples, batch_size, sample_chunk):
    """What a PyTorch user writes: encode once, draw z in chunks, running logsumexp."""
    d = guide.head.latent_dim
    out = []
    for row in range(0, x.shape[0], batch_size):
        rows = x[row : row + batch_size]
        loc, raw = guide.head.linear(guide.encoder(rows)).split(d, dim=-1)
        scale = positive(raw, guide.head.min_scale)
        running = None
        for begin in range(0, num_samples, sample_chunk):
            size = min(sample_chunk, num_samples - begin)
            eps = torch.randn(size, *loc.shape, device=x.device)
            z = loc + scale * eps
            log_lik = -binary_cross_entropy_with_logits(
                model.decoder(z), rows.expand(size, *rows.shape), reduction="none"
            ).sum(-1)
            log_prior = -0.5 * (z.pow(2).sum(-1) + d * math.log(2 * math.pi))
            log_q = -0.5 * (eps.pow(2).sum(-1) + d * math.log(2 * math.pi)) - scale.log().sum(-1)
            chunk = torch.logsumexp(log_lik + log_prior - log_q, 0)
            running = chunk if running is None else torch.logaddexp(running, chunk)
        out.append(running - math.log(num_samples))
    return torch.cat(out)


def run(method: str, args, queue) -> None:
    """In a forked child: build the same networks (same seed), time one method, report."""
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    model = build_vae(784, args.latent_dim, (300, 300), activation="gated").to(args.device)
    guide = build_guide(784, args.latent_dim, "diagonal", (300, 300), "gated").to(args.device)
    x, _ = test_images(args.images)
    x = x.to(args.device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kwargs = dict(batch_size=args.batch_size, sample_chunk=args.sample_chunk)
    estimate = evaluate.log_likelihood if method == "pyrovae" else reference_log_likelihood
    with pyro.validation_enabled(False):
        # untimed warm-up on the chunk shape: a fresh process (spawned on CUDA) would
        # otherwise time CUDA's lazy start (cuBLAS handles, kernel loading) as well
        estimate(model, guide, x[: args.batch_size], args.sample_chunk, **kwargs)
        synchronize(args.device)
        start = time.perf_counter()
        log_px = estimate(model, guide, x, args.num_samples, **kwargs)
        synchronize(args.device)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((seconds, before / 1024, peak / 1024, log_px.mean().item()))


def main(args: argparse.Namespace) -> float:
    # CUDA cannot be used in a forked child: spawn there (slower start, same measurement)
    context = multiprocessing.get_context("spawn" if args.device.startswith("cuda") else "fork")
    results = {}
    for method in ("pyrovae", "reference") * args.rounds:
        queue = context.Queue()
        child = context.Process(target=run, args=(method, args, queue))
        child.start()
        outcome = queue.get()
        child.join()
        best = results.get(method)
        results[method] = outcome if best is None or outcome[0] < best[0] else best
    _, source = test_images(1)
    speed = {m: args.images / r[0] for m, r in results.items()}
    ratio = speed["pyrovae"] / speed["reference"]
    print(
        f"IWAE evaluation, S = {args.num_samples}, {args.images} {source} test images, gated "
        f"784-300-300, z = {args.latent_dim}, chunks of {args.sample_chunk} draws x "
        f"{args.batch_size} images, device {args.device}, torch threads {args.threads}"
    )
    for method, (_, before, peak, mean) in results.items():
        print(
            f"  {method:9s}: {speed[method]:8.2f} images/s, peak RSS {peak:7.0f} MB "
            f"({peak - before:+.0f} MB during the estimate), mean log p(x) {mean:.3f}"
        )
    print(f"  ratio pyrovae / reference (throughput): {ratio:.3f}")
    return ratio


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--num-samples", type=int, default=5000, help="S, draws per image")
    parser.add_argument("--images", type=int, default=200, help="test images")
    parser.add_argument("--batch-size", type=int, default=100, help="images per chunk")
    parser.add_argument("--sample-chunk", type=int, default=100, help="draws per chunk")
    parser.add_argument("--latent-dim", type=int, default=40, help="d")
    parser.add_argument("--rounds", type=int, default=2, help="runs per method (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
