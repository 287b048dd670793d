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

__all__ = [
    "FAMILIES",
    "AmortizedGuide",
    "DiagonalNormalHead",
    "DirichletHead",
    "FlowHead",
    "FullCovarianceHead",
    "GuideHead",
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
