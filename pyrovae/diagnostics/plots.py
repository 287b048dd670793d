"""Figures saved as PNG: k-hat and ESS per data point by guide, latent marginals across
guides (arviz_plots forest plot), ELBO curves, image grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import arviz_plots  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_khat(khats: Mapping[str, np.ndarray], path: Path, threshold: float) -> Path:
    """Pareto k-hat per data point, one colour per guide, with the reliability line."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, k in khats.items():
        ax.plot(np.arange(len(k)), k, "o", ms=3, alpha=0.7, label=name)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"k = {threshold:.2f}")
    ax.set_xlabel("data point")
    ax.set_ylabel("PSIS k-hat")
    ax.legend(fontsize=8, ncol=len(khats) + 1)
    return _save(fig, path)


def plot_ess(ess: Mapping[str, np.ndarray], path: Path, num_samples: int) -> Path:
    """Distribution of importance-sampling ESS / S per data point, per guide."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([e / num_samples for e in ess.values()], tick_labels=list(ess))
    ax.set_ylabel(f"ESS / S (S = {num_samples})")
    ax.set_yscale("log")
    return _save(fig, path)


def plot_latent_marginals(
    trees: Mapping[str, xr.DataTree], path: Path, points: Sequence[int] = (0, 1, 2)
) -> Path:
    """Forest plot of q(z | x_n) marginals for a few data points, across guides: the
    latent sites every tree has (named after the model's sites)."""
    common = set.intersection(*(set(t["posterior"].data_vars) for t in trees.values()))
    first = next(iter(trees.values()))
    names = [v for v in first["posterior"].data_vars if v in common]
    # arviz-plots 0.8 fails on a dict holding one model: pass a lone tree as it is
    source = first if len(trees) == 1 else dict(trees)
    pc = arviz_plots.plot_forest(source, var_names=names, coords={"obs": list(points)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = pc.viz["chart"].item() if "chart" in pc.viz else None
    if fig is not None:
        handles = [plt.Line2D([], [], color=f"C{i}") for i in range(len(trees))]
        fig.legend(handles, list(trees), loc="upper right", fontsize=8)
    pc.savefig(path)
    plt.close("all")
    return path


def plot_elbo_curves(curves: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Validation ELBO per epoch for each run."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats / point)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_image_rows(
    rows: Mapping[str, torch.Tensor], image_shape: tuple[int, int], path: Path, title: str = ""
) -> Path:
    """One row of images (``(n, D)`` in [0, 1]) per entry, labelled on the left."""
    n = max(r.shape[0] for r in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.9), squeeze=False)
    for i, (label, images) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < images.shape[0]:
                ax.imshow(images[j].reshape(image_shape).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
