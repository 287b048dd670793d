"""Geometry shared by the distributions on the unit sphere S^{d-1} in R^d.

Samplers for rotation-symmetric distributions (von Mises-Fisher, Power Spherical) draw
the component ``t`` along the mean direction, a direction ``v`` uniform on the tangent
sphere S^{d-2}, form ``z' = (t, sqrt(1 - t^2) v)`` around e_1 and reflect it onto ``mu``
with the Householder map that sends e_1 to mu (Wood 1994; De Cao & Aziz 2020).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from pyrovae.errors import PyrovaeError

SAME_DIRECTION = 1e-12  # |e_1 - mu|^2 below this: mu is e_1 and no reflection is needed


def log_sphere_area(dim: int) -> float:
    """log of the surface area of S^{dim-1} in R^dim: log 2 + (d/2) log pi - lgamma(d/2)."""
    return math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


def unit_directions(raw: torch.Tensor) -> torch.Tensor:
    """``raw / |raw|`` along the last axis, safe for any finite or huge input: rows are
    rescaled by their largest entry first (no overflow of |raw|^2), and an all-zero row
    maps to e_1."""
    largest = raw.abs().amax(-1, keepdim=True)
    scaled = raw / torch.where(largest > 0, largest, torch.ones_like(largest))
    norm = scaled.norm(dim=-1, keepdim=True)
    e1 = torch.zeros_like(raw)
    e1[..., 0] = 1
    return torch.where(norm > 0, scaled / norm.clamp_min(torch.finfo(raw.dtype).tiny), e1)


def tangent_directions(shape: torch.Size, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Directions uniform on S^{dim-2}, shape ``(*shape, dim - 1)``."""
    v = torch.randn(*shape, dim - 1, dtype=like.dtype, device=like.device)
    return v / v.norm(dim=-1, keepdim=True)


def around_e1(one_minus_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z' = (t, sqrt(1 - t^2) v)`` from ``1 - t`` (kept exact near the pole)."""
    t = 1 - one_minus_t
    radius = torch.sqrt((one_minus_t * (2 - one_minus_t)).clamp_min(0))
    return torch.cat([t.unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)


def reflect_onto(loc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Apply the Householder reflection H(mu) = I - 2 u u^T / u^T u, u = e_1 - mu, which
    maps e_1 to ``loc``; identity where ``loc`` is e_1 already."""
    u = -loc.clone()
    u[..., 0] = u[..., 0] + 1
    uu = (u * u).sum(-1, keepdim=True)
    degenerate = uu < SAME_DIRECTION
    coefficient = torch.where(degenerate, torch.zeros_like(uu), 2 / uu.clamp_min(SAME_DIRECTION))
    return z - coefficient * (z * u).sum(-1, keepdim=True) * u


class RotationSymmetric(TorchDistribution):
    """Base of distributions on S^{d-1} with a mean direction ``loc`` (unit vectors,
    shape ``(*batch, d)``, d >= 2) and a ``concentration`` (shape broadcastable to
    ``batch``) whose density depends on z only through mu^T z. Subclasses add the sampler
    and the densities."""

    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration, validate_args=None):
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise PyrovaeError(f"loc must have a last dimension d >= 2, got shape {loc.shape}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(*batch_shape, loc.shape[-1])
        self.concentration = concentration.expand(batch_shape)
        self.dim = loc.shape[-1]
        super().__init__(batch_shape, loc.shape[-1:], validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return type(self)(
            self.loc.expand(batch_shape + self.event_shape),
            self.concentration.expand(batch_shape),
            validate_args=False,
        )
