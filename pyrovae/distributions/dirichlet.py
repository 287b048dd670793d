"""The Dirichlet distribution with a draw that a recording of the loss can replay.

torch reparameterizes ``Dirichlet.rsample`` with the implicit gradient of its Gamma draws
(Jankowiak & Obermeyer 2018): for x ~ Dir(alpha) and an upstream gradient g,

    dL/dalpha_i = sum_j (dx_j/dalpha_i) g_j,   computed as  G_i (g_i - sum_j x_j g_j),

with G = ``torch._dirichlet_grad(x, alpha, sum(alpha))``. It does so in a
``torch.autograd.Function``, whose backward a recording (:mod:`pyrovae.train.traced`) does
not keep: it inlines the forward, a draw without a derivative. Here the same draw and the
same backward are one custom operator, which a recording keeps as one node, so the
Dirichlet guide, and the Power Spherical guide (whose Beta draw is a 2-part Dirichlet),
train recorded. The draw consumes torch's generator exactly as torch's does: the same
seed gives the same values.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch


@torch.library.custom_op("pyrovae::dirichlet_draw", mutates_args=())
def dirichlet_draw(concentration: torch.Tensor) -> torch.Tensor:
    """One draw from Dirichlet(``concentration``) per row of the last axis, differentiable
    in ``concentration`` (torch's implicit reparameterization gradient)."""
    return torch._sample_dirichlet(concentration)


@dirichlet_draw.register_fake
def _(concentration):
    return torch.empty_like(concentration)


def _save_concentration_and_draw(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _implicit_backward(ctx, grad):
    concentration, x = ctx.saved_tensors
    total = concentration.sum(-1, keepdim=True).expand_as(concentration)
    implicit = torch._dirichlet_grad(x, concentration, total)
    return implicit * (grad - (x * grad).sum(-1, keepdim=True))


dirichlet_draw.register_autograd(_implicit_backward, setup_context=_save_concentration_and_draw)


class Dirichlet(dist.Dirichlet):
    """Pyro's Dirichlet, drawing through :func:`dirichlet_draw`: the same values from the
    same seed and the same gradients, and a draw that ``fit``'s recording can replay."""

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        return dirichlet_draw(self.concentration.expand(shape))
