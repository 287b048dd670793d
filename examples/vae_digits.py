"""The shortest complete pyrovae program: a VAE written in plain Pyro syntax.

Generative story: z ~ N(0, I_d), x | z ~ Bernoulli(logits = decoder(z)), for each image in
the "data" plate; guide q(z | x) = N(mu(x), diag(sigma(x)^2)). Trained with
``pyrovae.fit``; prints the test ELBO (nats per image) and saves reconstructions and prior
samples as PNG.

    python examples/vae_digits.py --epochs 50
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pyrovae import estimate_elbo, fit, load_dataset  # noqa: E402


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: int, data_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim)
        )

    def forward(self, z):
        return self.net(z)  # Bernoulli logits


class Encoder(nn.Module):
    def __init__(self, data_dim: int, hidden: int, latent_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(data_dim, hidden), nn.ReLU())
        self.loc = nn.Linear(hidden, latent_dim)
        self.scale = nn.Sequential(nn.Linear(hidden, latent_dim), nn.Softplus())

    def forward(self, x):
        h = self.net(x)
        return self.loc(h), self.scale(h) + 1e-3


def make_pair(data_dim: int, latent_dim: int, hidden: int):
    decoder = Decoder(latent_dim, hidden, data_dim)
    encoder = Encoder(data_dim, hidden, latent_dim)

    def model(x):
        pyro.module("digits_decoder", decoder)
        with pyro.plate("data", x.shape[0], device=x.device):
            z = pyro.sample(
                "z", dist.Normal(x.new_zeros(latent_dim), x.new_ones(latent_dim)).to_event(1)
            )
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("digits_encoder", encoder)
        with pyro.plate("data", x.shape[0], device=x.device):
            loc, scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, encoder, decoder


def save_grid(images: torch.Tensor, shape: tuple[int, int], path: Path, title: str) -> None:
    n = images.shape[0]
    cols = 10
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows + 0.4))
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image.reshape(shape).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    pyro.set_rng_seed(args.seed)
    data = load_dataset(args.dataset, binarize="dynamic")
    model, guide, encoder, decoder = make_pair(data.num_features, args.latent_dim, args.hidden)
    encoder.to(args.device)
    decoder.to(args.device)
    history = fit(
        model,
        guide,
        data,
        epochs=args.epochs,
        objective="TraceMeanField_ELBO",
        learning_rate=args.lr,
        seed=args.seed,
        device=args.device,
        progress=False,
    )
    test = data.test.to(args.device)
    test_elbo = estimate_elbo(model, guide, test, "Trace_ELBO", num_particles=10)
    print(
        f"epochs {args.epochs}: validation ELBO {history.validation_elbo[-1]:.2f}, "
        f"test ELBO {test_elbo:.2f} nats per image"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        x = test[:10]
        recon = torch.sigmoid(decoder(encoder(x)[0]))
        prior_z = torch.randn(20, args.latent_dim, device=args.device)
        samples = torch.sigmoid(decoder(prior_z))
    save_grid(
        torch.cat([x, recon]),
        data.image_shape,
        out / "reconstructions.png",
        "test images (top) and reconstructions (bottom)",
    )
    save_grid(samples, data.image_shape, out / "samples.png", "decoded prior samples")
    print(f"figures in {out}/")
    return {"test_elbo": test_elbo, "history": history}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    parser.add_argument("--epochs", type=int, default=50, help="training epochs")
    parser.add_argument("--latent-dim", type=int, default=8, help="d, the size of z")
    parser.add_argument("--hidden", type=int, default=256, help="width of the hidden layers")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds networks and data draws")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--out", default="runs/vae_digits", help="output folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
