"""Sample from the prior or from the aggregated posterior? Measured.

After training, q_agg(z) = (1/N) sum_n q(z|x_n) is a finite mixture of N Gaussians; the
decoder was trained on draws from it, not from p(z). This script decodes n latents from
each source and measures:

- ``log q_agg(z)``: how typical the latents are under the aggregated posterior (prior
  draws that land in its "holes" score low);
- ``NN distance``: mean squared Euclidean distance from each decoded image E[x|z] to its
  nearest training image (lower = closer to real data);
- ``KL(q_agg || p)``: the marginal KL, how far apart the two sources are overall.

It prints the table and saves both sets of samples side by side.

    python examples/aggregated_posterior.py --epochs 100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro
import torch

from guides import build_guide
from models import build_vae
from pyrovae import evaluate, fit, load_dataset
from pyrovae.diagnostics.plots import plot_image_rows, save
from pyrovae.report import format_table


def nearest_neighbour_distance(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance from each image to its closest reference image, ``(n,)``."""
    return torch.cdist(images, reference).min(1).values.pow(2)


def main(args: argparse.Namespace) -> list[dict]:
    pyro.set_rng_seed(args.seed)
    data = load_dataset(args.dataset)
    splits = data.to(args.device)
    model = build_vae(data.num_features, args.latent_dim, (args.hidden,))
    guide = build_guide(data.num_features, args.latent_dim, args.guide, (args.hidden,))
    fit(
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
    train = splits.presented("train")
    marginal_kl = evaluate.kl_decomposition(model, guide, train[: args.eval_points]).marginal_kl
    rows, samples = [], {}
    for source in ("prior", "aggregate"):
        drawn = evaluate.sample(model, guide, args.num_samples, train, source=source)
        log_agg = evaluate.aggregate_log_density(guide, train[: args.eval_points], drawn.z)
        nn = nearest_neighbour_distance(drawn.mean, splits.train)
        samples[source] = drawn.mean[:12]
        rows.append(
            {
                "source": source,
                "log q_agg(z)": log_agg.mean().item(),
                "median log q_agg(z)": log_agg.median().item(),
                "NN distance": nn.mean().item(),
                "+/- se": (nn.std() / len(nn) ** 0.5).item(),
            }
        )
    print(
        f"{args.dataset}, {args.guide} guide, d={args.latent_dim}, {args.epochs} epochs; "
        f"{args.num_samples} decoded samples per source; KL(q_agg || p) = "
        f"{marginal_kl:.2f} nats"
    )
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "aggregated_posterior.json").write_text(
        json.dumps({"rows": rows, "marginal_kl": marginal_kl}, indent=2)
    )
    figure = plot_image_rows(
        samples, data.image_shape, "E[x|z] for z ~ p(z) (top) and z ~ q_agg(z) (bottom)"
    )
    save(figure, out / "prior_vs_aggregate.png")
    print(f"table and figure in {out}/")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    parser.add_argument("--guide", default="diagonal", help="guide family q(z|x)")
    parser.add_argument("--latent-dim", type=int, default=10, help="d, the size of z")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per run")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="importance samples per image for log p(x)"
    )
    parser.add_argument("--eval-points", type=int, default=2000, help="test images evaluated")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--out", default="runs/aggregated_posterior", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
