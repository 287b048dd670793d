"""Helpers shared by the benchmark scripts: the minibatch they time, the timer, the
hand-written PyTorch VAE they compare against, and the paired ratio they report."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from guides.families import positive
from pyrovae.data import FASHION_MNIST_DIR, load_dataset
from pyrovae.train.step import has_fused_adam


def load_batch(batch_size: int, device: str) -> tuple[torch.Tensor, int, str]:
    if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        data = load_dataset("fashion-mnist")
        x = torch.bernoulli(data.train[:batch_size])
        return x.to(device), data.train.shape[0], "Fashion-MNIST"
    return torch.bernoulli(torch.full((batch_size, 784), 0.3)).to(device), 50_000, "random"


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels, so that a host timer measures them."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, x, data_scale, n, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step(x, data_scale)
    synchronize(device)
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


class HandWrittenVAE:
    """Copies of a pyrovae diagonal pair's networks (encoder, head layer, decoder) with
    the VAE loss written by hand and ``torch.optim.Adam`` on them: its default
    implementation, or the fused kernel pyrovae trains with."""

    def __init__(self, model, guide, lr: float, fused: bool):
        self.encoder = copy.deepcopy(guide.encoder)
        self.head = copy.deepcopy(guide.head.linear)
        self.decoder = copy.deepcopy(model.decoder)
        self.min_scale, self.latent_dim = guide.head.min_scale, guide.head.latent_dim
        params = [*self.encoder.parameters(), *self.head.parameters()]
        params += self.decoder.parameters()
        fused = (fused and has_fused_adam(params)) or None  # None: PyTorch picks its default
        self.optimizer = torch.optim.Adam(params, lr=lr, fused=fused)

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        return hand_written_negative_elbo(
            self.encoder, self.head, self.decoder, x, self.latent_dim, self.min_scale
        )

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def hand_written_references(reference_class, model, guide, lr: float) -> dict:
    """The two references every training benchmark times: ``reference_class`` (a
    :class:`HandWrittenVAE`) with PyTorch's default Adam and with the fused kernel."""
    return {
        f"hand-written, {name}": reference_class(model, guide, lr, fused)
        for name, fused in (("default Adam", False), ("fused Adam", True))
    }


def paired_ratios(ours: list[float], references: dict[str, list[float]]) -> dict[str, float]:
    """pyrovae / reference per reference: the median over rounds of the per-round ratio, so
    a slow spell of the machine hits both sides of a pair."""
    return {
        name: statistics.median(a / b for a, b in zip(ours, times, strict=True))
        for name, times in references.items()
    }


def print_paired_ratios(
    times: dict[str, list[float]], ours: list[str], references: list[str]
) -> dict[str, dict[str, float]]:
    """Print and return paired_ratios of each of ours against each reference, timed in the
    same rounds: ``{ours name: {reference name: ratio}}``."""
    ratios = {}
    for name in ours:
        ratios[name] = paired_ratios(times[name], {r: times[r] for r in references})
        for reference, ratio in ratios[name].items():
            print(f"  ratio {name} / {reference + ':':25s} {ratio:.3f}")
    return ratios
