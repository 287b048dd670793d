"""Why penalise the KL per example and not on the aggregate? ELBO surgery.

Hoffman & Johnson (2016): the per-example KL the ELBO penalises splits as

    (1/N) sum_n KL(q(z|x_n) || p(z)) = I_q(n; z) + KL(q_agg(z) || p(z)),

the information z carries about which data point it came from (at most log N) plus how far
the aggregated posterior q_agg = (1/N) sum_n q(z|x_n) is from the prior. Across latent
sizes this script trains the same VAE and prints the three terms (nats per data point),
the test ELBO and active units, and plots them. Most of the per-example KL is mutual
information the model needs; the aggregate itself stays close to p(z).

    python examples/elbo_surgery.py --latent-dims 2,5,10,20 --epochs 60
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402

from guides import build_guide  # noqa: E402
from models import build_vae  # noqa: E402
from pyrovae import evaluate, fit, load_dataset  # noqa: E402
from pyrovae.report import format_table  # noqa: E402


def main(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset)
    test = data.to(args.device).split("test")[: args.eval_points]
    rows = []
    for d in args.latent_dims:
        pyro.set_rng_seed(args.seed)
        model = build_vae(data.num_features, d, (args.hidden,))
        guide = build_guide(data.num_features, d, args.guide, (args.hidden,))
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
        parts = evaluate.kl_decomposition(model, guide, test, num_samples=args.num_samples)
        rows.append(
            {
                "d": d,
                "test ELBO": evaluate.elbo(model, guide, test, num_samples=10).mean().item(),
                "avg KL": parts.avg_kl,
                "I(x;z)": parts.mutual_info,
                "marginal KL": parts.marginal_kl,
                "+/- se": parts.marginal_kl_se,
                "log N": parts.log_n,
                "active units": evaluate.active_units(guide, test)["active"],
            }
        )
    print(
        f"ELBO surgery on {args.dataset} test images ({len(test)} points), "
        f"{args.guide} guide, {args.epochs} epochs; nats per data point"
    )
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "elbo_surgery.json").write_text(json.dumps(rows, indent=2))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels = [str(r["d"]) for r in rows]
    mi = [r["I(x;z)"] for r in rows]
    ax.bar(labels, mi, label="I(x;z)")
    ax.bar(labels, [r["marginal KL"] for r in rows], bottom=mi, label="KL(q_agg || p)")
    ax.axhline(rows[0]["log N"], color="k", ls="--", lw=1, label="log N (bound on I)")
    ax.set_xlabel("latent size d")
    ax.set_ylabel("nats per data point")
    ax.set_title("average KL(q(z|x) || p(z)) = I(x;z) + KL(q_agg || p)")
    ax.legend(fontsize=8)
    fig.savefig(out / "elbo_surgery.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    print(f"table and figure in {out}/")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    parser.add_argument("--guide", default="diagonal", help="guide family q(z|x)")
    parser.add_argument(
        "--latent-dims",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[2, 5, 10, 20],
        help="comma-separated latent sizes, one run each",
    )
    parser.add_argument("--epochs", type=int, default=60, help="training epochs per run")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument(
        "--num-samples", type=int, default=20, help="draws of z per image for the KL decomposition"
    )
    parser.add_argument("--eval-points", type=int, default=1000, help="test images evaluated")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--out", default="runs/elbo_surgery", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
