"""Your own model in plain Pyro: does learning the noise scale of a Gaussian VAE pay?

A user's model and guide, written with nothing but Pyro and torch, trained with
``pyrovae.fit`` and measured with every estimator the library has. The data are the
digits' gray levels (continuous, in [0, 1]: ``binarize="none"``). Two variants share the
decoder architecture and the training budget:

- ``fixed``:   x | z ~ N(mu(z), 0.1^2 I)
- ``learned``: x | z ~ N(mu(z), diag(sigma^2)), sigma a learned vector (one per pixel,
  floored at 0.02 so the density of always-black pixels stays finite).

How to read the printed table (nats per image; densities, so they can exceed 0):
``ELBO`` and ``log p(x)`` (importance sampling, S draws per image, +/- its standard error
over images) say how well each variant models the test images; ``avg KL`` = ``I(x;z)`` +
``marginal KL`` (Hoffman & Johnson's ELBO surgery) says how much of the KL buys
information about the image; ``active`` counts latent units that move with x;
``khat median`` and ``ESS/S`` say whether importance sampling from the guide is reliable
(k-hat below the threshold min(1 - 1/log10 S, 0.7)). The last lines are ArviZ ``compare``
on per-image log p(x): the difference between the variants and its paired standard
error. Figures go to ``--out``.

    python examples/custom_model.py --epochs 100
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from pyrovae import evaluate, fit, load_dataset
from pyrovae.diagnostics import (
    compare_guides,
    importance_ess,
    khat_threshold,
    log_ratios,
    plots,
    psis_khat,
    to_datatree,
)

MIN_SCALE = 0.02


def make_pair(data_dim: int, latent_dim: int, hidden: int, learn_scale: bool, name: str):
    """A Gaussian VAE as two plain functions; networks registered with ``pyro.module``."""
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim), nn.Sigmoid()
    )
    encoder = nn.Sequential(
        nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
    )

    def model(x):
        pyro.module(f"{name}_decoder", decoder)
        if learn_scale:
            scale = pyro.param(
                f"{name}_pixel_scale",
                lambda: x.new_full((data_dim,), 0.1),
                constraint=constraints.greater_than(MIN_SCALE),
            )
        else:
            scale = x.new_full((data_dim,), 0.1)
        with pyro.plate("data", x.shape[0], device=x.device):
            z = pyro.sample("z", dist.Normal(x.new_zeros(latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), scale).to_event(1), obs=x)

    def guide(x):
        pyro.module(f"{name}_encoder", encoder)
        with pyro.plate("data", x.shape[0], device=x.device):
            loc, raw_scale = encoder(x).chunk(2, dim=-1)
            scale = nn.functional.softplus(raw_scale) + 1e-3
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, nn.ModuleList([encoder, decoder])


def measure(model, guide, test: torch.Tensor, args) -> dict:
    """Every estimator of pyrovae.evaluate and the ArviZ diagnostics on the test images."""
    log_px = evaluate.log_likelihood(model, guide, test, num_samples=args.num_samples)
    elbo = evaluate.elbo(model, guide, test, num_samples=10)
    parts = evaluate.kl_decomposition(model, guide, test[: args.eval_points], num_samples=10)
    tree = to_datatree(model, guide, test[: args.eval_points], num_samples=args.diag_samples)
    ratios = log_ratios(tree)
    khat, ess = psis_khat(ratios), importance_ess(ratios)
    correlation = evaluate.posterior_correlation(guide, test[: args.eval_points])
    return {
        "ELBO": elbo.mean().item(),
        "log p(x)": log_px.mean().item(),
        "+/- se": (log_px.std() / math.sqrt(len(log_px))).item(),
        "avg KL": parts.avg_kl,
        "I(x;z)": parts.mutual_info,
        "marginal KL": parts.marginal_kl,
        "active": evaluate.active_units(guide, test)["active"],
        "mean |corr|": correlation["mean_abs_corr"],
        "khat median": float(torch.as_tensor(khat).median()),
        "ESS/S": float(torch.as_tensor(ess).median()) / args.diag_samples,
        "_log_px": log_px.cpu().numpy(),
        "_khat": khat,
        "_ess": ess,
    }


def main(args: argparse.Namespace) -> dict:
    data = load_dataset(args.dataset, binarize="none")
    test = data.test.to(args.device)
    results, curves = {}, {}
    for variant in ("fixed", "learned"):
        pyro.set_rng_seed(args.seed)  # same initial networks for both variants
        model, guide, networks = make_pair(
            data.num_features, args.latent_dim, args.hidden, variant == "learned", variant
        )
        networks.to(args.device)
        history = fit(
            model,
            guide,
            data,
            objective="TraceMeanField_ELBO",
            epochs=args.epochs,
            learning_rate=args.lr,
            seed=args.seed,
            device=args.device,
            progress=False,
        )
        curves[variant] = history.validation_elbo
        results[variant] = measure(model, guide, test, args)

    shown = [k for k in results["fixed"] if not k.startswith("_")]
    print(f"{args.dataset} gray levels, d = {args.latent_dim}, {args.epochs} epochs; nats/image")
    print(f"{'variant':>8} " + " ".join(f"{k:>12}" for k in shown))
    for variant, row in results.items():
        print(f"{variant:>8} " + " ".join(f"{row[k]:>12.3f}" for k in shown))
    ranking = compare_guides({v: r["_log_px"] for v, r in results.items()}, args.num_samples)
    print("ArviZ compare on per-image test log p(x) (elpd_diff +/- dse, summed over images):")
    print(ranking[["rank", "elpd", "elpd_diff", "dse"]].round(2).to_string())

    out = Path(args.out)
    threshold = khat_threshold(args.diag_samples)
    plots.save(plots.plot_elpd_differences(ranking), out / "elpd_differences.png")
    plots.save(
        plots.plot_khat({v: r["_khat"] for v, r in results.items()}, threshold), out / "khat.png"
    )
    plots.save(plots.plot_elbo_curves(curves), out / "elbo_curves.png")
    print(f"figures in {out}/")
    return {"results": results, "ranking": ranking}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    parser.add_argument("--latent-dim", type=int, default=5, help="d, the size of z")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden layers")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per variant")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="importance samples per image for log p(x)"
    )
    parser.add_argument(
        "--diag-samples", type=int, default=500, help="guide draws per image for PSIS and ESS"
    )
    parser.add_argument(
        "--eval-points", type=int, default=200, help="test images for the KL split and PSIS"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--out", default="runs/custom_model", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
