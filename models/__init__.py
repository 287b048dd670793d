"""Generative models p(x, z) in Pyro syntax: priors, likelihoods, decoders, the VAE."""

from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    make_likelihood,
)
from .priors import (
    PRIORS,
    DirichletPrior,
    HypersphericalUniformPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
    prior_options,
    register_prior,
)
from .vae import VAE, build_vae

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliLikelihood",
    "DirichletPrior",
    "HypersphericalUniformPrior",
    "MixtureOfGaussiansPrior",
    "VampPrior",
    "prior_options",
    "register_prior",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "StandardNormalPrior",
    "build_vae",
    "make_likelihood",
    "make_prior",
]
