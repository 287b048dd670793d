"""The amortized guide: ``q(z | x) = head(encoder(x))`` inside the ``"data"`` plate."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.errors import PyrovaeError
from pyrovae.naming import unique_name

from .encoders import MLPEncoder
from .families import make_head


class AmortizedGuide(nn.Module):
    """Calling it runs the Pyro guide on ``x``: ``z_n ~ head(encoder(x_n))`` for each n.

    Args:
        encoder: maps x ``(B, D)`` to features ``(B, F)``.
        head: maps features to a distribution with batch shape ``(B,)`` and event shape
            ``(d,)``: a registered :class:`~guides.families.GuideHead` or your own
            ``nn.Module``. A plain function is accepted only if it has no trainable layers
            (``pyro.module`` registers submodules; a layer a function closes over would
            never be trained, so it is refused).
        name: parameter-store name (unique by default, see :mod:`pyrovae.naming`).
    """

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(
        self,
        encoder: nn.Module,
        head: Callable[[torch.Tensor], dist.Distribution],
        name: str | None = None,
    ):
        super().__init__()
        _refuse_hidden_layers(head)
        self.encoder = encoder
        self.head = head
        self.name = name or unique_name("guide")

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            pyro.sample("z", self.posterior(x))

    guide = forward

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) as a distribution object, batch shape ``(B,)``, event shape ``(d,)``."""
        return self.head(self.encoder(x))


def _refuse_hidden_layers(head) -> None:
    """PyrovaeError if ``head`` is a plain function holding an ``nn.Module``/``Parameter``
    in its closure or defaults: those weights are invisible to ``pyro.module``."""
    if isinstance(head, nn.Module) or not callable(head):
        return
    cells = [c.cell_contents for c in (getattr(head, "__closure__", None) or ()) if _filled(c)]
    cells += list(getattr(head, "__defaults__", None) or ())
    hidden = [type(v).__name__ for v in cells if isinstance(v, nn.Module | nn.Parameter)]
    if hidden:
        raise PyrovaeError(
            f"the head is a plain function holding trainable {', '.join(hidden)}; pyro.module "
            "cannot see them, so they would never be trained. Make the head an nn.Module "
            "(subclass guides.families.GuideHead or wrap the layers in a module)"
        )


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell
        return False
    return True


def build_guide(
    data_dim: int,
    latent_dim: int,
    family: str = "diagonal",
    hidden: Sequence[int] = (256,),
    activation: str = "relu",
    name: str | None = None,
    **family_kwargs,
) -> AmortizedGuide:
    """An MLP encoder ``D -> hidden...`` with a registered family head."""
    encoder = MLPEncoder(data_dim, hidden, activation)
    head = make_head(family, encoder.out_features, latent_dim, **family_kwargs)
    return AmortizedGuide(encoder, head, name)
