"""Estimators and summaries that work from Pyro traces of any model/guide pair."""

from .summaries import count_parameters, posterior_correlation

__all__ = ["count_parameters", "posterior_correlation"]
