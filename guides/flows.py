"""Conditional affine autoregressive transforms for the ``flow`` guide family.

One transform T maps x to y = exp(s(x)) * x + m(x) coordinate-wise, where a masked network
(MADE) makes m_i and s_i depend only on the coordinates before i in an ordering, and on
the context c (the encoder's features of the data point). So

    T(x) and log det(dT/dx) = sum_i s_i(x): one pass of the network;
    T^{-1}(y): d passes, each fixing one more coordinate of x.

The flow family can run T either way (:class:`guides.families.FlowHead`'s ``direction``):

- ``"iaf"`` (Kingma et al. 2016): z = T(eps) for eps from the base Normal. Drawing z is one
  pass, and so is log q(z | x) of that draw (the transform caches it); the density of any
  OTHER point needs the d-pass inverse.
- ``"maf"`` (the direction of Papamakarios et al. 2017): z = T^{-1}(eps). Drawing z costs
  the d passes, on the batch only; log q(z | x) of ANY point is one pass. A VampPrior
  scores each z under all K pseudo-input posteriors, B * K points per step (50,000 in
  the published protocol), so with a flow guide it needs this direction.

Two changes to Pyro's classes, neither of which changes the function computed or the
parameters (a checkpoint of Pyro's ``conditional_affine_autoregressive`` loads as is):

- :class:`SplitContextAutoRegressiveNN` applies the first layer as W_x x + (W_c c + b)
  instead of W [c; x] + b, with W_c c + b computed once per conditioning. Pyro copies the
  context to every point before concatenating: for the VampPrior's B * K points that is
  a (B K, dim(c) + d) block per pass, where this computes W_c c once per component and
  broadcasts it; and an inverse's d passes reuse it.
- :class:`AffineAutoregressive`'s inverse is the fixed-point iteration
  x <- (y - m(x)) * exp(-s(x)) started at 0, d times. Each pass makes one more coordinate
  exact (coordinate i reads only those before it), so after d passes x = T^{-1}(y) as a
  function of y and the parameters, and so are its gradients. Pyro's loop instead indexes
  a Python list with the permutation's tensor entries: a host read per coordinate, which
  stalls a GPU and which a recorded loss (:mod:`pyrovae.train.traced`) cannot replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import transforms as pyro_transforms
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import ConditionalAutoRegressiveNN
from torch.nn import functional


class SplitContextAutoRegressiveNN(ConditionalAutoRegressiveNN):
    """Pyro's conditional MADE, with the context's part of the first layer applied to the
    context alone and broadcast (see the module docstring).

    ``forward(x, context)`` returns (m, s), each of shape
    ``broadcast(x.shape[:-1], context.shape[:-1]) + (d,)``."""

    def _parts(self, layer) -> tuple[torch.Tensor, torch.Tensor]:
        # columns [0, |c|) of a masked layer read the context (its mask is all ones
        # there), the rest read x: Pyro concatenates [context, x]
        weight = layer.weight * layer.mask
        return weight[:, : self.context_dim], weight[:, self.context_dim :]

    def condition(self, context: torch.Tensor):
        """``x -> (m, s)`` for this context. The context's terms (W_c c + b of the first
        layer, and of the skip layer if any) are computed here, once: the d passes of an
        inverse reuse them."""
        context_weight, x_weight = self._parts(self.layers[0])
        context_term = functional.linear(context, context_weight, self.layers[0].bias)
        if self.skip_layer is not None:
            skip_context_weight, skip_x_weight = self._parts(self.skip_layer)
            skip_context_term = functional.linear(context, skip_context_weight)

        def network(x: torch.Tensor):
            h = functional.linear(x, x_weight) + context_term
            for layer in self.layers[1:]:
                h = layer(self.f(h))
            if self.skip_layer is not None:
                h = h + functional.linear(x, skip_x_weight) + skip_context_term
            return self._shape_outputs(h)

        network.permutation = self.permutation
        network.get_permutation = self.get_permutation
        return network

    def forward(self, x: torch.Tensor, context: torch.Tensor):
        return self.condition(context)(x)

    def _shape_outputs(self, h: torch.Tensor):
        # as Pyro's, from h's shape (the broadcast of x's and the context's batch shapes)
        if self.output_multiplier == 1:
            return h
        h = h.reshape(*h.shape[:-1], self.output_multiplier, self.input_dim)
        if self.count_params == 1:
            return h
        if self.all_ones:
            return torch.unbind(h, dim=-2)
        return tuple(h[..., s, :] for s in self.param_slices)


class AffineAutoregressive(pyro_transforms.AffineAutoregressive):
    """Pyro's affine autoregressive transform (non-``stable`` form) whose inverse is a
    fixed-point iteration without host reads (see the module docstring)."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(y)
        for _ in range(y.size(-1)):
            mean, log_scale = self.arn(x)
            log_scale = clamp_preserve_gradients(
                log_scale, self.log_scale_min_clip, self.log_scale_max_clip
            )
            x = (y - mean) * torch.exp(-log_scale)
        # the last pass read every coordinate it depends on exactly: its s is s(x)
        self._cached_log_scale = log_scale
        return x


class ConditionalAffineAutoregressive(pyro_transforms.ConditionalAffineAutoregressive):
    """Pyro's conditional affine autoregressive transform over a
    :class:`SplitContextAutoRegressiveNN`; ``condition(c)`` gives this module's
    :class:`AffineAutoregressive`."""

    def condition(self, context: torch.Tensor) -> AffineAutoregressive:
        return AffineAutoregressive(self.nn.condition(context), **self.kwargs)


def conditional_affine_flow(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int]
) -> ConditionalAffineAutoregressive:
    """One conditional affine autoregressive transform on R^``input_dim`` conditioned on a
    context of ``context_dim`` features, its MADE with ``hidden_dims`` ReLU layers (as
    Pyro's ``conditional_affine_autoregressive``, with its log-scale clip [-5, 3])."""
    network = SplitContextAutoRegressiveNN(input_dim, context_dim, list(hidden_dims))
    return ConditionalAffineAutoregressive(network)
