"""Amortized guides q(z | x): encoders and guide families (distribution heads)."""

from .amortized import AmortizedGuide, build_guide
from .encoders import MLPEncoder
from .families import (
    FAMILIES,
    DiagonalNormalHead,
    DirichletHead,
    FlowHead,
    FullCovarianceHead,
    GuideHead,
    LowRankHead,
    MixtureHead,
    PowerSphericalHead,
    VonMisesFisherHead,
    family_options,
    make_head,
    register_family,
)
from .gmvae import GMVAEGuide, build_gmvae_guide
from .hierarchical import HierarchicalGuide, build_hierarchical_guide
from .m2 import SemiSupervisedGuide, build_m2_guide

# Guide builders by model name (models.MODELS has the matching model builders).
GUIDE_BUILDERS = {
    "vae": build_guide,
    "hvae": build_hierarchical_guide,
    "gmvae": build_gmvae_guide,
    "m2": build_m2_guide,
}

__all__ = [
    "GUIDE_BUILDERS",
    "FAMILIES",
    "AmortizedGuide",
    "DiagonalNormalHead",
    "DirichletHead",
    "FlowHead",
    "FullCovarianceHead",
    "GMVAEGuide",
    "SemiSupervisedGuide",
    "build_m2_guide",
    "GuideHead",
    "build_gmvae_guide",
    "HierarchicalGuide",
    "build_hierarchical_guide",
    "LowRankHead",
    "MLPEncoder",
    "MixtureHead",
    "PowerSphericalHead",
    "VonMisesFisherHead",
    "family_options",
    "build_guide",
    "make_head",
    "register_family",
]
