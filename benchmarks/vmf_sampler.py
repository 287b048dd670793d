"""Hyperspherical posteriors: sampling cost against a diagonal Normal, and the vMF KL in
pure torch against a scipy-based evaluation.

1. ``rsample`` + backward, per batch of B posteriors in R^d: a diagonal Normal
   (loc, scale), a von Mises-Fisher (mu, kappa; Wood's sampler with implicit gradients) and
   a Power Spherical (mu, kappa; Beta reparameterization). The loss is sum(c^T z) plus the
   KL to the prior (N(0, I) or the uniform on the sphere), so both the sample path and the
   closed-form KL are differentiated. Timed interleaved, round by round; prints the median
   ms per call and the ratio to the Normal.
2. KL(vMF || uniform) for B concentrations: ``pyrovae`` (log-space Bessel in torch, stays
   on the device) against the public reference's approach (``scipy.special.ive`` on the
   host, values copied back). Prints the time ratio ours / scipy.

    python benchmarks/vmf_sampler.py [--device cuda] [--batch-size 100] [--rounds 15]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import scipy.special
import torch
from torch.distributions import kl_divergence

from pyrovae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from pyrovae.distributions.sphere import log_sphere_area
from pyrovae.report import format_table


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def sampler_calls(d: int, batch: int, device: str) -> dict:
    """name -> a closure doing rsample + KL + backward on fresh leaf parameters."""
    c = torch.randn(d, device=device)
    raw = torch.randn(batch, d, device=device)
    loc = torch.nn.functional.normalize(raw, dim=-1)
    kappa = 1 + 50 * torch.rand(batch, device=device)
    uniform = HypersphericalUniform(d, device=device)
    standard = torch.distributions.Normal(torch.zeros(d, device=device), 1.0)

    def normal():
        mean = raw.clone().requires_grad_()
        scale = (0.1 * torch.ones(batch, d, device=device)).requires_grad_()
        q = torch.distributions.Normal(mean, scale)
        loss = (q.rsample() @ c).sum() + kl_divergence(q, standard).sum()
        loss.backward()

    def spherical(cls):
        def call():
            mu = loc.clone().requires_grad_()
            k = kappa.clone().requires_grad_()
            q = cls(mu, k)
            loss = (q.rsample() @ c).sum() + kl_divergence(q, uniform).sum()
            loss.backward()

        return call

    return {
        "normal": normal,
        "vmf": spherical(VonMisesFisher),
        "power-spherical": spherical(PowerSpherical),
    }


def scipy_kl(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """KL(vMF || U) the way the public s-vae code evaluates it: ive on the host."""
    k = kappa.detach().cpu().double().numpy()
    ive_nu = scipy.special.ive(d / 2 - 1, k)
    ratio = scipy.special.ive(d / 2, k) / ive_nu
    log_c = (d / 2 - 1) * np.log(k) - d / 2 * math.log(2 * math.pi) - (np.log(ive_nu) + k)
    kl = k * ratio + log_c + log_sphere_area(d)
    return torch.as_tensor(kl, device=kappa.device, dtype=kappa.dtype)


def kl_calls(d: int, batch: int, device: str):
    """(ours, scipy-based) closures computing KL(vMF || U) for ``batch`` concentrations."""
    kappa = 1 + 100 * torch.rand(batch, device=device)
    loc = torch.nn.functional.normalize(torch.randn(batch, d, device=device), dim=-1)
    uniform = HypersphericalUniform(d, device=device)

    def ours():
        return kl_divergence(VonMisesFisher(loc, kappa), uniform)

    def reference():
        return scipy_kl(d, kappa)

    return ours, reference


def kl_row(d: int, kl_batch: int, args: argparse.Namespace) -> dict:
    """Time KL(vMF || U) for ``kl_batch`` kappas, ours against the scipy evaluation."""
    ours, reference = kl_calls(d, kl_batch, args.device)
    gap = (ours().double() - reference().double()).abs().max().item()
    t_ours, t_ref = [], []
    timed(ours, args.warmup, args.device)
    timed(reference, args.warmup, args.device)
    for _ in range(args.rounds):
        t_ours.append(timed(ours, args.steps, args.device))
        t_ref.append(timed(reference, args.steps, args.device))
    return {
        "d": d,
        "what": f"vMF KL, {kl_batch} kappas (max |diff| {gap:.1e})",
        "ms/call": 1e3 * statistics.median(t_ours),
        "ratio": statistics.median(t_ours) / statistics.median(t_ref),
        "reference": f"scipy ({1e3 * statistics.median(t_ref):.3f} ms)",
    }


def main(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    rows = []
    for d in args.dims:
        calls = sampler_calls(d, args.batch_size, args.device)
        for call in calls.values():
            timed(call, args.warmup, args.device)
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                times[name].append(timed(call, args.steps, args.device))
        base = statistics.median(times["normal"])
        for name, t in times.items():
            rows.append(
                {
                    "d": d,
                    "what": f"{name} rsample+KL+backward",
                    "ms/call": 1e3 * statistics.median(t),
                    "ratio": statistics.median(t) / base,
                    "reference": "normal",
                }
            )
        for kl_batch in args.kl_batch:
            rows.append(kl_row(d, kl_batch, args))
    print(
        f"device {args.device}, batch {args.batch_size}, {args.rounds} rounds x {args.steps} "
        "calls, medians; ratio = time / reference time (lower is faster)"
    )
    print(format_table(rows))
    for row in rows:
        label = row["what"].split(" (")[0].replace(",", "")
        print(f"ratio {label} d={row['d']}: {row['ratio']:.3f}")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=[10, 64])
    parser.add_argument("--batch-size", type=int, default=100, help="posteriors per call")
    parser.add_argument(
        "--kl-batch",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[100, 10000],
        help="kappas per KL call (comma-separated sizes)",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="calls per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
