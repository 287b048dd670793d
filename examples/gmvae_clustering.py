"""Can a VAE find the classes without labels? A Gaussian-mixture VAE, measured.

The question: a GMVAE puts a discrete cluster y above the Gaussian latent (y ~ Cat(pi),
z | y ~ N(m_y, s_y^2), x | z) and sums y out exactly (TraceEnum_ELBO). Do its clusters
match the classes, and does it do better than clustering a plain VAE's latent space?

Printed, nats per image where a likelihood is shown (higher is better):

- ``clustering accuracy``: best one-to-one matching of clusters to labels (Hungarian
  algorithm) on the test images; chance is about 1/K;
- for the GMVAE, clusters = argmax_y q(y | x); for the reference, k-means (K clusters)
  on a plain VAE's posterior means, same encoder/decoder widths and budget;
- ``test ELBO`` and ``test log p(x)`` (y summed out exactly).

It also saves ``cluster_means.png``: the decoded mean of each cluster, E[x | z = m_y].

    python examples/gmvae_clustering.py --epochs 200                  # digits
    python examples/gmvae_clustering.py --dataset fashion-mnist --epochs 20
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch
from sklearn.cluster import KMeans

from guides import build_gmvae_guide, build_guide
from models import build_gmvae, build_vae
from pyrovae import evaluate, fit, load_dataset
from pyrovae.evaluate import clustering_accuracy
from pyrovae.report import format_table


def train(model, guide, data, objective: str, args):
    return fit(
        model,
        guide,
        data,
        objective=objective,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        learning_rate=args.lr,
        seed=args.seed,
        device=args.device,
        progress=False,
    )


def main(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset)
    if data.labels is None:
        raise SystemExit(f"{args.dataset} has no labels to score clusters against")
    splits = data.to(args.device)
    test = splits.split("test")[: args.test_points]
    labels = data.labels["test"][: args.test_points]
    hidden = (args.hidden, args.hidden)
    k = args.clusters

    pyro.set_rng_seed(args.seed)
    guide = build_gmvae_guide(data.num_features, args.latent_dim, hidden=hidden, num_clusters=k)
    model = build_gmvae(data.num_features, args.latent_dim, hidden, num_clusters=k)
    train(model, guide, data, "TraceEnum_ELBO", args)
    clusters = guide.cluster_logits(test).argmax(-1)
    log_px = evaluate.log_likelihood(model, guide, test, args.num_samples)
    rows = [
        {
            "model": f"GMVAE (K={k})",
            "clustering accuracy": clustering_accuracy(clusters, labels),
            "test ELBO": evaluate.elbo(model, guide, test, num_samples=10).mean().item(),
            "test log p(x)": log_px.mean().item(),
            "+/- se": (log_px.std() / math.sqrt(len(test))).item(),
        }
    ]

    pyro.set_rng_seed(args.seed)
    vae_guide = build_guide(data.num_features, args.latent_dim, "diagonal", hidden)
    vae = build_vae(data.num_features, args.latent_dim, hidden)
    train(vae, vae_guide, data, "Trace_ELBO", args)
    means = evaluate.posterior_means(vae_guide, test).cpu().numpy()
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=args.seed).fit(means)
    vae_log_px = evaluate.log_likelihood(vae, vae_guide, test, args.num_samples)
    rows.append(
        {
            "model": f"VAE + k-means (K={k})",
            "clustering accuracy": clustering_accuracy(kmeans.labels_, labels),
            "test ELBO": evaluate.elbo(vae, vae_guide, test, num_samples=10).mean().item(),
            "test log p(x)": vae_log_px.mean().item(),
            "+/- se": (vae_log_px.std() / math.sqrt(len(test))).item(),
        }
    )
    print(
        f"{data.name}: d = {args.latent_dim}, {args.epochs} epochs, {len(test)} test images, "
        f"log p(x) from {args.num_samples} importance samples; chance accuracy ~ {1 / k:.2f}"
    )
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gmvae_clustering.json").write_text(json.dumps(rows, indent=2))
    if data.image_shape is not None:
        plot_cluster_means(model, data.image_shape, out / "cluster_means.png")
    print(f"table and cluster_means.png in {out}/")
    return rows


@torch.no_grad()
def plot_cluster_means(model, image_shape, path: Path) -> Path:
    """Decoded cluster means E[x | z = m_y], one image per cluster."""
    images = model.likelihood.mean(model.decoder(model.cluster_locs)).cpu()
    fig, axes = plt.subplots(1, len(images), figsize=(0.9 * len(images), 1.3), squeeze=False)
    for y, (ax, image) in enumerate(zip(axes[0], images, strict=True)):
        ax.imshow(image.reshape(image_shape).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"y={y}", fontsize=8)
    fig.suptitle("GMVAE: decoded mean of each cluster", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    parser.add_argument("--clusters", type=int, default=10, help="K, number of clusters")
    parser.add_argument("--latent-dim", type=int, default=5, help="d")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden layers")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs per model")
    parser.add_argument("--warmup-epochs", type=int, default=10, help="KL warm-up epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples")
    parser.add_argument("--test-points", type=int, default=10_000, help="test images used")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs/gmvae_clustering", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
