"""Helpers shared by the benchmark scripts: the minibatch they time, and the timer."""

from __future__ import annotations

import time

import torch

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
