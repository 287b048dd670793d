"""Amortized guides q(z | x): encoders and guide families (distribution heads)."""

from .amortized import AmortizedGuide, build_guide
from .encoders import MLPEncoder
from .families import (
    FAMILIES,
    DiagonalNormalHead,
    FlowHead,
    FullCovarianceHead,
    GuideHead,
    LowRankHead,
    MixtureHead,
    make_head,
    register_family,
)

__all__ = [
    "FAMILIES",
    "AmortizedGuide",
    "DiagonalNormalHead",
    "FlowHead",
    "FullCovarianceHead",
    "GuideHead",
    "LowRankHead",
    "MLPEncoder",
    "MixtureHead",
    "build_guide",
    "make_head",
    "register_family",
]
