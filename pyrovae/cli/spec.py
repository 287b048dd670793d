"""The run specification: which data, model and guide a CLI run builds, serialisable.

This is the one place that maps names to concrete models and guides (the registries in
``models`` and ``guides``), so the engine itself never imports them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from guides import FAMILIES, AmortizedGuide, build_guide
from models import LIKELIHOODS, PRIORS, VAE, build_vae
from pyrovae.data import DATASETS, DataSplits, load_dataset


@dataclass
class RunSpec:
    """Names and sizes that define a model/guide pair and its data."""

    dataset: str = "digits"
    binarize: str = "dynamic"
    data_dir: str | None = None
    guide: str = "diagonal"
    prior: str = "standard"
    likelihood: str = "bernoulli"
    latent_dim: int = 10
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    rank: int = 2
    components: int = 3
    flows: int = 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        known = {f.name for f in fields(cls)}
        spec = cls(**{k: v for k, v in d.items() if k in known})
        spec.hidden = tuple(spec.hidden)
        return spec

    def validate(self) -> None:
        for value, registry, what in (
            (self.dataset, DATASETS, "dataset"),
            (self.guide, FAMILIES, "guide"),
            (self.prior, PRIORS, "prior"),
            (self.likelihood, LIKELIHOODS, "likelihood"),
        ):
            if value not in registry:
                raise ValueError(f"unknown {what} {value!r}; choose one of {sorted(registry)}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")

    def family_kwargs(self) -> dict:
        return {
            "lowrank": {"rank": self.rank},
            "mixture": {"num_components": self.components},
            "flow": {"num_flows": self.flows},
        }.get(self.guide, {})

    def load_data(self) -> DataSplits:
        return load_dataset(self.dataset, self.binarize, data_dir=self.data_dir)

    def build(self, data_dim: int) -> tuple[VAE, AmortizedGuide]:
        """A fresh (model, guide) pair for data with ``data_dim`` features."""
        self.validate()
        model = build_vae(
            data_dim, self.latent_dim, self.hidden, self.prior, self.likelihood, self.activation
        )
        guide = build_guide(
            data_dim,
            self.latent_dim,
            self.guide,
            self.hidden,
            self.activation,
            **self.family_kwargs(),
        )
        return model, guide


def save_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
