"""Unsupervised clustering accuracy: the best one-to-one matching of clusters to labels.

    accuracy = max over injective maps c -> l of (1/N) sum_n [map(cluster_n) = label_n]

found with the Hungarian algorithm on the cluster x label contingency table
(``scipy.optimize.linear_sum_assignment``), the measure behind the GMVAE paper's 96.9 %
on MNIST (Dilokthanakul et al. 2016).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pyrovae.errors import PyrovaeError


def clustering_accuracy(clusters, labels) -> float:
    """Accuracy of the best one-to-one matching of ``clusters`` (ints, shape (N,)) to
    ``labels`` (ints, shape (N,)); with more clusters than labels, unmatched clusters count
    as errors."""
    clusters = np.asarray(torch.as_tensor(clusters).cpu(), dtype=np.int64).reshape(-1)
    labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64).reshape(-1)
    if clusters.shape != labels.shape or clusters.size == 0:
        raise PyrovaeError(
            f"clusters and labels must be non-empty and of one length, got {clusters.shape} "
            f"and {labels.shape}"
        )
    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / labels.size)
