"""Does a second stochastic layer pay? One layer vs two, same budget, measured.

The question: a hierarchical VAE, p(z2) p(z1 | z2) p(x | z1, z2) with guide
q(z2 | x) q(z1 | x, z2), is the published way past a one-layer VAE (the "HVAE + VampPrior"
row). This script trains a one-layer VAE with d latents and a two-layer one with d latents
per layer, same networks' widths, epochs and prior, and prints:

- ``test ELBO`` and ``test log p(x)`` (importance sampling, S draws per image), nats per
  image, higher is better; ``vs vae`` is the paired difference over the same test images
  with its standard error (``+/- dse``): within about 2 dse it is noise;
- ``active units`` per layer (Var_x E_q[z_u | x] > 0.01): how many coordinates each layer
  uses; a top layer with 0 active units has collapsed onto its prior.

    python examples/hierarchical.py --epochs 200                   # digits, a few minutes
    python examples/hierarchical.py --prior vamp --epochs 200
    python examples/hierarchical.py --dataset fashion-mnist --epochs 20 --latent-dim 20
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pyro

from guides import build_guide, build_hierarchical_guide
from models import build_hvae, build_vae
from pyrovae import evaluate, fit, load_dataset
from pyrovae.report import format_table


def build(kind: str, data, args):
    """The one-layer ("vae") or two-layer ("hvae") pair, same widths and prior."""
    hidden = (args.hidden, args.hidden)
    options = {"num_pseudo_inputs": args.pseudo_inputs} if args.prior == "vamp" else {}
    if kind == "vae":
        guide = build_guide(data.num_features, args.latent_dim, "diagonal", hidden)
        model = build_vae(
            data.num_features,
            args.latent_dim,
            hidden,
            args.prior,
            posterior=guide.posterior,
            prior_options=options,
        )
    else:
        guide = build_hierarchical_guide(data.num_features, args.latent_dim, "diagonal", hidden)
        model = build_hvae(
            data.num_features,
            args.latent_dim,
            hidden,
            args.prior,
            posterior=guide.posterior,
            prior_options=options,
        )
    return model, guide


def main(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset)
    test = data.to(args.device).split("test")[: args.test_points]
    rows, log_px = [], {}
    for kind in ("vae", "hvae"):
        pyro.set_rng_seed(args.seed)
        model, guide = build(kind, data, args)
        history = fit(
            model,
            guide,
            data,
            epochs=args.epochs,
            warmup_epochs=args.warmup_epochs,
            learning_rate=args.lr,
            seed=args.seed,
            device=args.device,
            progress=False,
        )
        log_px[kind] = evaluate.log_likelihood(model, guide, test, args.num_samples)
        units = evaluate.active_units(guide, test)["sites"]
        rows.append(
            {
                "model": kind,
                "test ELBO": evaluate.elbo(model, guide, test, num_samples=10).mean().item(),
                "test log p(x)": log_px[kind].mean().item(),
                "+/- se": (log_px[kind].std() / math.sqrt(len(test))).item(),
                "active units": ", ".join(f"{s}: {u['active']}" for s, u in units.items()),
                "s/epoch": history.seconds_per_epoch,
            }
        )
    for row in rows:
        pair = evaluate.paired_difference(log_px[row["model"]], log_px["vae"])
        row["vs vae"], row["+/- dse"] = pair
    print(
        f"{data.name}: prior {args.prior}, d = {args.latent_dim} per layer, {args.epochs} "
        f"epochs, log p(x) from {args.num_samples} importance samples; nats per image"
    )
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hierarchical.json").write_text(json.dumps(rows, indent=2))
    print(f"table in {out}/hierarchical.json")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    parser.add_argument("--prior", default="standard", help="prior of the (top) layer")
    parser.add_argument("--latent-dim", type=int, default=5, help="latents per layer")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden layers")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs per model")
    parser.add_argument("--warmup-epochs", type=int, default=10, help="KL warm-up epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--pseudo-inputs", type=int, default=100, help="VampPrior K")
    parser.add_argument("--num-samples", type=int, default=5000, help="importance samples")
    parser.add_argument("--test-points", type=int, default=10_000, help="test images used")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs/hierarchical", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
