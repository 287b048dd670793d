"""Why a diagonal rather than a full covariance? Answered with measurements.

Trains the same VAE model (same decoder, prior, likelihood, epochs, seed) with each guide
family (diagonal, full, lowrank, mixture, flow) and prints, per family: distribution
parameters emitted per data point (2d vs d(d+3)/2 ...), guide size, whether the KL was
analytic, validation and test ELBO (nats per image), the test ELBO minus the first
family's paired over the same test images (+/- its standard error: a difference of a few
se is beyond noise), the mean |correlation| between latent coordinates that q(z|x) found,
and seconds per epoch. Saves the paired differences, with their error bars, as a figure.

    python examples/full_covariance.py --epochs 40 --latent-dim 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro
from matplotlib.figure import Figure

from guides import FAMILIES, build_guide  # noqa: E402
from pyrovae import supports  # noqa: E402

# The Gaussian-space families: the ones a N(0, I) prior can score.
EUCLIDEAN_FAMILIES = sorted(
    name for name in FAMILIES if supports.CATALOGUE["guide family"][name] == "real_vector"
)
from models import build_vae  # noqa: E402
from pyrovae import (  # noqa: E402
    estimate_elbo,
    evaluate,  # noqa: E402
    fit,
    load_dataset,
)
from pyrovae.evaluate import count_parameters, posterior_correlation  # noqa: E402
from pyrovae.report import format_table  # noqa: E402


def compare_families(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset)
    splits = data.to(args.device)
    rows, per_image = [], {}
    for family in args.families:
        pyro.set_rng_seed(args.seed)  # same decoder initialisation for every family
        model = build_vae(data.num_features, args.latent_dim, (args.hidden,))
        guide = build_guide(data.num_features, args.latent_dim, family, (args.hidden,))
        history = fit(
            model,
            guide,
            data,
            objective=args.objective,
            epochs=args.epochs,
            learning_rate=args.lr,
            seed=args.seed,
            device=args.device,
            progress=False,
        )
        rows.append(
            {
                "family": family,
                "outputs/point": guide.head.outputs_per_datapoint,
                "guide params": count_parameters(guide),
                "KL": history.kl_path.split("=")[-1],
                "val ELBO": history.validation_elbo[-1],
                "test ELBO": estimate_elbo(
                    model, guide, splits.test, "Trace_ELBO", num_particles=20
                ),
                "vs first": 0.0,
                "+/- se": 0.0,
                "mean |corr|": posterior_correlation(guide, splits.test)["mean_abs_corr"],
                "s/epoch": history.seconds_per_epoch,
            }
        )
        # per-image ELBO, for differences paired over the same test images
        per_image[family] = evaluate.elbo(model, guide, splits.test, num_samples=20).cpu()
    first = per_image[args.families[0]]
    for row in rows:
        row["vs first"], row["+/- se"] = evaluate.paired_difference(per_image[row["family"]], first)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Each family's test ELBO minus the first family's, paired over the test images, with
    its standard error; the axis includes 0 and is not cut."""
    fig = Figure(figsize=(6.5, 0.45 * len(rows) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(rows)))[::-1]
    for yi, row in zip(y, rows, strict=True):
        ax.errorbar(row["vs first"], yi, xerr=row["+/- se"], fmt="o", capsize=4)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y, [r["family"] for r in rows])
    ax.set_xlabel(f"test ELBO minus {rows[0]['family']}'s, nats per image (paired, +/- se)")
    ax.set_title("Guide families at equal budget")
    fig.savefig(path, dpi=100)


def main(args: argparse.Namespace) -> list[dict]:
    rows = compare_families(args)
    print(
        f"{args.dataset}, d={args.latent_dim}, {args.epochs} epochs, {args.objective}; "
        "ELBO in nats per image (higher is better); 'vs first' is paired over the test images"
    )
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "families.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "families.png")
    print(f"table and figure in {out}/")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    parser.add_argument(
        "--families",
        type=lambda s: s.split(","),
        default=EUCLIDEAN_FAMILIES,
        help="comma-separated guide families",
    )
    parser.add_argument("--objective", default="TraceMeanField_ELBO", help="training objective")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per run")
    parser.add_argument("--latent-dim", type=int, default=8, help="d, the size of z")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--out", default="runs/full_covariance", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
