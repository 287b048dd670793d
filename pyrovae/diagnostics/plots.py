"""Figures of a guide comparison. Every function returns a ``matplotlib.figure.Figure``
built without pyplot: importing this module switches no backend and no function touches
the user's open figures. :func:`save` writes one as PNG.

Each figure has a title, labelled axes and a legend tied to the run names; a difference
between guides is always drawn with its standard error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def plot_khat(khats: Mapping[str, np.ndarray], threshold: float) -> Figure:
    """PSIS k-hat of every data point, sorted, one line per guide; the dashed line is the
    reliability threshold min(1 - 1/log10 S, 0.7) (Vehtari et al. 2024): importance
    sampling from a guide is trustworthy for the points below it."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(list(khats))
    for name, k in khats.items():
        k = np.sort(np.asarray(k))
        ax.plot(np.linspace(0, 1, len(k)), k, color=colours[name], label=name)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("fraction of test points (sorted by k-hat)")
    ax.set_ylabel("PSIS k-hat")
    ax.set_title("Pareto k-hat of the importance weights, per test point")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_ess(ess: Mapping[str, np.ndarray], num_samples: int) -> Figure:
    """Importance-sampling efficiency ESS / S per test point, one box per guide (1 means
    the guide is the exact posterior)."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    names = list(ess)
    ax.boxplot([np.asarray(e) / num_samples for e in ess.values()], tick_labels=names)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"ESS / S   (S = {num_samples})")
    ax.set_xlabel("guide")
    ax.set_title("Effective sample size of the importance weights, per test point")
    return fig


def plot_khat_vs_ess(
    khats: Mapping[str, np.ndarray], ess: Mapping[str, np.ndarray], num_samples: int, threshold
) -> Figure:
    """Per test point, k-hat against ESS / S, one panel per guide: the same quantities for
    every guide, so the panels compare like with like."""
    names = list(khats)
    fig = Figure(figsize=(3.0 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), sharex=True, sharey=True, squeeze=False)[0]
    colours = _colours(names)
    for ax, name in zip(axes, names, strict=True):
        ax.scatter(
            np.asarray(khats[name]),
            np.asarray(ess[name]) / num_samples,
            s=8,
            alpha=0.6,
            color=colours[name],
        )
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("PSIS k-hat")
    axes[0].set_ylabel("ESS / S")
    fig.suptitle(f"Importance sampling per test point (dashed: k-hat threshold {threshold:.2f})")
    return fig


def plot_elpd_differences(ranking: pd.DataFrame) -> Figure:
    """ArviZ ``compare`` as a figure: each guide's summed test log p(x) difference to the
    best (``elpd_diff``, nats) with the paired standard error ``dse`` as an error bar; the
    axis starts at 0 (the best) and is not cut."""
    fig = Figure(figsize=(6.5, 0.5 * len(ranking) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    names = list(ranking.index)
    y = np.arange(len(names))[::-1]
    colours = _colours(names)
    for yi, name in zip(y, names, strict=True):
        diff, dse = float(ranking.loc[name, "elpd_diff"]), float(ranking.loc[name, "dse"])
        ax.errorbar(-diff, yi, xerr=dse, fmt="o", color=colours[name], capsize=4)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y, names)
    ax.set_xlabel("test log p(x) summed over points, minus the best guide's (nats)")
    ax.set_title("Guides ranked by ArviZ compare (error bar: paired standard error)")
    return fig


def plot_elbo_curves(curves: Mapping[str, Sequence[float]], first_epoch: int = 1) -> Figure:
    """Validation ELBO per epoch for each run (nats per data point, higher is better); each
    curve's first value belongs to epoch ``first_epoch``."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(list(curves))
    for name, values in curves.items():
        epochs = np.arange(first_epoch, first_epoch + len(values))
        ax.plot(epochs, values, color=colours[name], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats / point)")
    ax.set_title("Training progress")
    ax.legend(handles=[Line2D([], [], color=c, label=n) for n, c in colours.items()], fontsize=8)
    return fig


def plot_image_rows(
    rows: Mapping[str, torch.Tensor], image_shape: tuple[int, int], title: str = ""
) -> Figure:
    """One row of images (``(n, D)`` in [0, 1]) per entry, labelled on the left."""
    n = max(r.shape[0] for r in rows.values())
    fig = Figure(figsize=(n * 0.8 + 1.0, len(rows) * 0.9 + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, (label, images) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < images.shape[0]:
                image = images[j].reshape(image_shape).detach().cpu().numpy()
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig
