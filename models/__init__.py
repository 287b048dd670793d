"""Generative models p(x, z) in Pyro syntax: priors, likelihoods, decoders, the VAE."""

from .gmvae import GaussianMixtureVAE, build_gmvae
from .hvae import ConditionalNormal, HierarchicalVAE, build_hvae
from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    make_likelihood,
)
from .m2 import SemiSupervisedVAE, build_m2
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

# Model builders by name (the CLI's --model); each has a guide builder of the same name in
# guides.GUIDE_BUILDERS. Keyword options after the common arguments become --model-NAME-*.
MODELS = {"vae": build_vae, "hvae": build_hvae, "gmvae": build_gmvae, "m2": build_m2}

__all__ = [
    "MODELS",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "BernoulliLikelihood",
    "ConditionalNormal",
    "SemiSupervisedVAE",
    "build_m2",
    "GaussianMixtureVAE",
    "build_gmvae",
    "HierarchicalVAE",
    "build_hvae",
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
