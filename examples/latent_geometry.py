"""Why Gaussian latents, and not a mixture, a VampPrior, a sphere or a simplex? Measured.

The question: a VAE's latent space need not be N(0, I). This script trains the same
decoder and encoder, for the same budget, with one latent geometry each (only the prior
and the guide family's distribution object change):

==============  ==========================  ===================================
configuration   prior p(z)                  guide q(z|x)
==============  ==========================  ===================================
gaussian        N(0, I)                     diagonal Normal
mixture         learnable mixture of K      diagonal Normal
vamp            VampPrior (K pseudo-inputs) diagonal Normal
sphere-vmf      uniform on S^{d-1}          von Mises-Fisher
sphere-ps       uniform on S^{d-1}          Power Spherical
simplex         Dirichlet(1)                Dirichlet
==============  ==========================  ===================================

How to read the table (nats per image, higher is better for ELBO and log p(x)): ``test
log p(x)`` is the importance-sampled marginal likelihood (S draws per image) with its
standard error over test images; ``vs gaussian`` is the paired difference to the Gaussian
run over the same images with its standard error (ArviZ ``compare``'s dse): a difference
within about 2 dse is noise. ``active units`` counts latent coordinates whose posterior mean
varies across images (Var > 0.01). The figure ``latent_picture.png`` places the test images
at their posterior means for a 2-D Gaussian latent and a 3-D spherical one, coloured by
digit, so you can see what each geometry does with the classes.

    python examples/latent_geometry.py --epochs 200            # digits, ~10 min on 2 cores
    python examples/latent_geometry.py --dataset fashion-mnist --epochs 20 --latent-dim 10
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch

from guides import build_guide
from models import build_vae
from pyrovae import diagnostics, evaluate, fit, load_dataset
from pyrovae.report import format_table

CONFIGURATIONS = {
    "gaussian": ("standard", "diagonal"),
    "mixture": ("mog", "diagonal"),
    "vamp": ("vamp", "diagonal"),
    "sphere-vmf": ("sphere", "vmf"),
    "sphere-ps": ("sphere", "power-spherical"),
    "simplex": ("dirichlet", "dirichlet"),
}


def train_pair(prior: str, family: str, latent_dim: int, data, args):
    """Build and train one pair; return (model, guide, history)."""
    pyro.set_rng_seed(args.seed)
    hidden = (args.hidden, args.hidden)
    guide = build_guide(data.num_features, latent_dim, family, hidden)
    options = {"num_pseudo_inputs": args.pseudo_inputs} if prior == "vamp" else {}
    model = build_vae(
        data.num_features,
        latent_dim,
        hidden,
        prior,
        posterior=guide.posterior,
        prior_options=options,
    )
    history = fit(
        model,
        guide,
        data,
        epochs=args.epochs,
        learning_rate=args.lr,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=False,
    )
    return model, guide, history


def measure(name, model, guide, history, test, num_samples) -> tuple[dict, torch.Tensor]:
    """One table row and the per-image log p(x), shape (N,)."""
    log_px = evaluate.log_likelihood(model, guide, test, num_samples)
    row = {
        "configuration": name,
        "test ELBO": evaluate.elbo(model, guide, test, num_samples=10).mean().item(),
        "test log p(x)": log_px.mean().item(),
        "+/- se": (log_px.std() / math.sqrt(len(log_px))).item(),
        "active units": evaluate.active_units(guide, test)["active"],
        "s/epoch": history.seconds_per_epoch,
    }
    return row, log_px


def latent_picture(data, args, path: Path) -> Path:
    """Posterior means of the test images: d=2 Gaussian vs d=3 sphere (equal-area map)."""
    test = data.to(args.device).split("test")
    labels = data.labels["test"].numpy() if data.labels is not None else np.zeros(len(test))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    for ax, (prior, family, d, title) in zip(
        axes,
        [
            ("standard", "diagonal", 2, "Gaussian, d = 2: posterior means"),
            ("sphere", "vmf", 3, "sphere S^2 (vMF): mean directions, equal-area map"),
        ],
        strict=True,
    ):
        model, guide, _ = train_pair(prior, family, d, data, args)
        means = evaluate.posterior_means(guide, test).cpu().numpy()
        if prior == "sphere":
            direction = means / np.linalg.norm(means, axis=1, keepdims=True)
            x, y = np.arctan2(direction[:, 1], direction[:, 0]), direction[:, 2]
            ax.set_xlabel("longitude (radians)")
            ax.set_ylabel("z_3 (height on the sphere)")
            ax.set_xlim(-math.pi, math.pi)
            ax.set_ylim(-1, 1)
        else:
            x, y = means[:, 0], means[:, 1]
            ax.set_xlabel("E[z_1 | x]")
            ax.set_ylabel("E[z_2 | x]")
        scatter = ax.scatter(x, y, c=labels, cmap="tab10", s=10, vmin=-0.5, vmax=9.5)
        ax.set_title(title, fontsize=10)
    fig.colorbar(scatter, ax=axes, ticks=range(10), label="label")
    fig.suptitle(f"{data.name} test images in two latent geometries", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_paired_differences(rows: list[dict], reference: str, path: Path) -> Path:
    """Paired difference in test log p(x) to the reference configuration, +/- 2 dse (the
    standard error of the per-image difference): what says whether a geometry wins."""
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.45 * len(rows)))
    names = [r["configuration"] for r in rows]
    values = [r[f"vs {reference}"] for r in rows]
    errors = [2 * r["+/- dse"] for r in rows]
    ax.errorbar(values, range(len(rows)), xerr=errors, fmt="o", capsize=3)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"test log p(x) minus {reference}'s, nats per image (paired, +/- 2 dse)")
    ax.set_title("latent geometry vs marginal likelihood (right of 0 = better)", fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset)
    test = data.to(args.device).split("test")[: args.test_points]
    rows, log_px = [], {}
    for name in args.configs:
        prior, family = CONFIGURATIONS[name]
        model, guide, history = train_pair(prior, family, args.latent_dim, data, args)
        row, log_px[name] = measure(name, model, guide, history, test, args.num_samples)
        rows.append(row)
    ranking = diagnostics.compare_guides(
        {n: v.cpu().numpy() for n, v in log_px.items()}, args.num_samples
    )
    reference = args.configs[0]
    for row in rows:  # paired difference to the first configuration, same test images
        mean, se = evaluate.paired_difference(log_px[row["configuration"]], log_px[reference])
        row[f"vs {reference}"] = mean
        row["+/- dse"] = se if len(test) > 1 else 0.0
    print(
        f"{data.name}: d = {args.latent_dim}, {args.epochs} epochs (warm-up {args.warmup_epochs}), "
        f"{len(test)} test images, log p(x) from {args.num_samples} importance samples; nats"
    )
    print(format_table(rows))
    print("ArviZ compare on summed test log p(x):")
    print(ranking[["rank", "elpd", "elpd_diff", "dse"]].round(2).to_string())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_geometry.json").write_text(json.dumps(rows, indent=2))
    plot_paired_differences(rows, reference, out / "log_px.png")
    latent_picture(data, args, out / "latent_picture.png")
    print(f"table, log_px.png and latent_picture.png in {out}/")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    parser.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=list(CONFIGURATIONS),
        help=f"comma-separated, from {', '.join(CONFIGURATIONS)}; the first is the reference",
    )
    parser.add_argument("--latent-dim", type=int, default=5, help="d for every configuration")
    parser.add_argument("--hidden", type=int, default=128, help="width of both hidden layers")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs per run")
    parser.add_argument("--warmup-epochs", type=int, default=10, help="KL warm-up epochs")
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--pseudo-inputs", type=int, default=100, help="VampPrior K")
    parser.add_argument("--num-samples", type=int, default=5000, help="importance samples")
    parser.add_argument("--test-points", type=int, default=10_000, help="test images used")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs/latent_geometry", help="output folder")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs if c not in CONFIGURATIONS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {list(CONFIGURATIONS)}")
    return args


if __name__ == "__main__":
    main(parse_args())
