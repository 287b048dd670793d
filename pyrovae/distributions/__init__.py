"""Distributions and KL registrations that Pyro/torch lack. Importing registers the KLs."""

from .kl import draw, kl_lowrank_diag_normal, kl_mvn_diag_normal, kl_path

__all__ = ["draw", "kl_lowrank_diag_normal", "kl_mvn_diag_normal", "kl_path"]
