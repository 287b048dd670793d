"""Estimators and summaries that work from Pyro traces of any model/guide pair."""

from .clustering import clustering_accuracy
from .estimators import (
    KLDecomposition,
    Samples,
    active_units,
    aggregate_log_density,
    elbo,
    guide_posterior,
    kl_decomposition,
    log_likelihood,
    posterior_means,
    reconstruct,
    sample,
)
from .importance import SiteLogProbs, log_weights, site_log_probs
from .objective import estimate_elbo
from .resumable import resumable_log_likelihood
from .sites import conditioned_log_prob, draw_latents, has_latent_parents
from .summaries import (
    correlation_summary,
    count_parameters,
    paired_difference,
    posterior_correlation,
)

__all__ = [
    "KLDecomposition",
    "Samples",
    "SiteLogProbs",
    "active_units",
    "clustering_accuracy",
    "conditioned_log_prob",
    "correlation_summary",
    "paired_difference",
    "draw_latents",
    "has_latent_parents",
    "aggregate_log_density",
    "count_parameters",
    "elbo",
    "estimate_elbo",
    "guide_posterior",
    "kl_decomposition",
    "log_likelihood",
    "log_weights",
    "posterior_correlation",
    "posterior_means",
    "reconstruct",
    "resumable_log_likelihood",
    "sample",
    "site_log_probs",
]
