"""Helpers shared by the benchmark scripts: the minibatch they time, and the timer."""

from __future__ import annotations

import time

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from guides.families import positive
from pyrovae.data import FASHION_MNIST_DIR, load_dataset


def load_batch(batch_size: int, device: str) -> tuple[torch.Tensor, int, str]:
    if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        data = load_dataset("fashion-mnist")
        x = torch.bernoulli(data.train[:batch_size])
        return x.to(device), data.train.shape[0], "Fashion-MNIST"
    return torch.bernoulli(torch.full((batch_size, 784), 0.3)).to(device), 50_000, "random"


def time_steps(step, x, data_scale, n, device) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step(x, data_scale)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def hand_written_negative_elbo(encoder, head, decoder, x, latent_dim: int, min_scale: float):
    """-sum_n [log p(x_n | z_n) - KL(q(z|x_n) || N(0, I))] with one reparameterized draw
    z_n ~ q(z|x_n) = N(loc, diag(scale^2)) and a Bernoulli decoder: the VAE loss a PyTorch
    user writes by hand, on the networks of a pyrovae diagonal guide and VAE."""
    loc, raw_scale = head(encoder(x)).split(latent_dim, dim=-1)
    scale = positive(raw_scale, min_scale)
    z = loc + scale * torch.randn_like(loc)
    log_lik = -binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
    kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1).sum(-1) - scale.log().sum(-1)
    return -(log_lik - kl).sum()
