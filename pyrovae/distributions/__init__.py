"""Distributions and KL registrations that Pyro/torch lack. Importing registers the KLs.

One file per distribution: :class:`StandardNormal` (N(0, 1) with its own closed-form
KL), :class:`Dirichlet` and :class:`MixtureOfDiagNormals` (Pyro's, with draws a recording
of the loss can replay), :class:`MultivariateNormal` (Pyro's, scoring its own draws from
their noise), :class:`LowRankMultivariateNormal` (Pyro's, its log density in float64),
:class:`VonMisesFisher`, :class:`PowerSpherical`,
:class:`HypersphericalUniform` (on the unit sphere), :class:`SharedComponentMixture` (the
mixture-of-Gaussians prior and the VampPrior); ``bessel`` has log I_nu and I_{nu+1}/I_nu in
pure torch; ``kl`` the closed-form KLs.
"""

from .bessel import bessel_ratio, log_iv, log_ive
from .dirichlet import Dirichlet
from .hyperspherical_uniform import HypersphericalUniform
from .kl import (
    draw,
    kl_lowrank_diag_normal,
    kl_mvn_diag_normal,
    kl_normal_standard_normal,
    kl_path,
    kl_power_spherical_uniform,
    kl_vmf_uniform,
)
from .low_rank_multivariate_normal import LowRankMultivariateNormal
from .mixture import SharedComponentMixture
from .mixture_of_diag_normals import MixtureOfDiagNormals
from .multivariate_normal import MultivariateNormal
from .power_spherical import PowerSpherical
from .sphere import log_sphere_area
from .standard_normal import StandardNormal
from .von_mises_fisher import VonMisesFisher

__all__ = [
    "Dirichlet",
    "HypersphericalUniform",
    "LowRankMultivariateNormal",
    "MixtureOfDiagNormals",
    "MultivariateNormal",
    "PowerSpherical",
    "SharedComponentMixture",
    "StandardNormal",
    "VonMisesFisher",
    "bessel_ratio",
    "draw",
    "kl_lowrank_diag_normal",
    "kl_mvn_diag_normal",
    "kl_normal_standard_normal",
    "kl_path",
    "kl_power_spherical_uniform",
    "kl_vmf_uniform",
    "log_iv",
    "log_ive",
    "log_sphere_area",
]
