"""Pyro's mixture of diagonal Normals with a draw that a recording of the loss can replay.

For q(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) Pyro draws the component k ~ pi, then
z = mu_k + sigma_k eps, and differentiates the draw with the pathwise derivative of
Jankowiak & Karaletsos (2019), which also reaches the mixture weights: a hand-written
backward in a ``torch.autograd.Function``. A recording (:mod:`pyrovae.train.traced`)
does not keep such a backward. Here the same draw, with Pyro's own backward, is one
custom operator that a recording keeps as one node, so the ``mixture`` guide trains
recorded. The component and the noise are drawn from torch's generator in Pyro's order:
the same seed gives the same values. One fix: Pyro's ``rsample(sample_shape)`` of a batch of
mixtures drew from the wrong batch element's components (or raised a size error); here a
batch is expanded to the sample shape first.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.diag_normal_mixture import _MixDiagNormalSample


@torch.library.custom_op("pyrovae::mixture_of_diag_normals_draw", mutates_args=())
def mixture_of_diag_normals_draw(
    locs: torch.Tensor,
    scales: torch.Tensor,
    component_logits: torch.Tensor,
    probs: torch.Tensor,
    which: torch.Tensor,
) -> torch.Tensor:
    """z = mu_k + sigma_k eps for the components ``which`` (shape ``(*sample, *batch)``)
    of the K components ``locs``, ``scales`` (``(*batch, K, d)``), eps ~ N(0, I); shape
    ``(*sample, *batch, d)``. Differentiable in ``locs``, ``scales`` and
    ``component_logits`` by Pyro's pathwise derivative (``probs`` = softmax of the logits
    gets no gradient of its own, as in Pyro)."""
    return _MixDiagNormalSample.forward(
        _SavedTensors(), locs, scales, component_logits, probs, which, _draw_shape(locs, which)
    )


@mixture_of_diag_normals_draw.register_fake
def _(locs, scales, component_logits, probs, which):
    return locs.new_empty(_draw_shape(locs, which))


def _draw_shape(locs: torch.Tensor, which: torch.Tensor) -> tuple[int, ...]:
    return (*which.shape, locs.shape[-1])


class _SavedTensors:
    """The part of an autograd context Pyro's forward and backward use."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def _save_for_pyros_backward(ctx, inputs, output):
    locs, scales, component_logits, probs, _ = inputs
    ctx.save_for_backward(output, scales, locs, component_logits, probs)


def _pyros_backward(ctx, grad):
    saved = _SavedTensors()
    saved.save_for_backward(*ctx.saved_tensors)
    locs_grad, scales_grad, logits_grad, *_ = _MixDiagNormalSample.backward(saved, grad)
    return locs_grad, scales_grad, logits_grad, None, None


mixture_of_diag_normals_draw.register_autograd(
    _pyros_backward, setup_context=_save_for_pyros_backward
)


class MixtureOfDiagNormals(dist.MixtureOfDiagNormals):
    """Pyro's ``MixtureOfDiagNormals``, drawing through
    :func:`mixture_of_diag_normals_draw`: the same values from the same seed and the same
    gradients, and a draw that ``fit``'s recording can replay."""

    @property
    def mean(self) -> torch.Tensor:
        """E[z] = sum_k pi_k mu_k, shape ``(*batch, d)`` (Pyro's class has none)."""
        return (self.categorical.probs.unsqueeze(-1) * self.locs).sum(-2)

    def rsample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        if sample_shape and self.batch_shape:
            # Pyro's draw gathers the components of ``which`` (sample + batch dims) from
            # ``locs`` (batch dims) dim by dim, so a sample dim took the batch's place: draws
            # of one batch element from another's components, or a size error. Expanded to
            # the full shape first, each draw picks from its own element's components.
            return self.expand(sample_shape + self.batch_shape).rsample()
        which = self.categorical.sample(sample_shape)
        return mixture_of_diag_normals_draw(
            self.locs, self.coord_scale, self.component_logits, self.categorical.probs, which
        )
