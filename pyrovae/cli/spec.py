"""The run specification: which data, model and guide a CLI run builds, serialisable.

This is the one place that maps names to concrete models and guides (the registries in
``models`` and ``guides``), so the engine itself never imports them.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from guides import FAMILIES, GUIDE_BUILDERS
from guides.families import SIZES
from models import LIKELIHOODS, MODELS, PRIORS
from models.priors import CONTEXT
from pyrovae import supports
from pyrovae.data import DATASETS, DataSplits, load_dataset
from pyrovae.errors import PyrovaeError, unknown_name
from pyrovae.options import check_options

# The arguments every model builder shares; its other keyword options are the model's.
MODEL_ARGS = (
    "data_dim",
    "latent_dim",
    "hidden",
    "prior",
    "likelihood",
    "activation",
    "name",
    "prior_options",
    "posterior",
)


@dataclass
class RunSpec:
    """Names, sizes and options that define a model/guide pair and its data.

    ``prior_options`` / ``guide_options`` are the keyword options of the chosen prior and
    guide family (see :func:`models.prior_options`, :func:`guides.family_options`).
    """

    dataset: str = "digits"
    binarize: str = "dynamic"
    data_dir: str | None = None
    data_path: str | None = None  # the .npz file of dataset "npz"
    num_validation: int | None = None  # None: the data set's protocol default
    model: str = "vae"
    guide: str = "diagonal"
    prior: str = "standard"
    likelihood: str = "bernoulli"
    latent_dim: int = 10
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    prior_options: dict = field(default_factory=dict)
    guide_options: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    labels_per_class: int = 10  # semi-supervised models only (m2)

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
        """Names, sizes, options, and that the prior and the guide family live on the same
        space: all checked before any data is loaded or network built."""
        for value, registry, what in (
            (self.dataset, DATASETS, "dataset"),
            (self.model, MODELS, "model"),
            (self.guide, FAMILIES, "guide"),
            (self.prior, PRIORS, "prior"),
            (self.likelihood, LIKELIHOODS, "likelihood"),
        ):
            if value not in registry:
                raise unknown_name(what, value, registry)
        if self.latent_dim < 1:
            raise PyrovaeError(f"latent_dim must be >= 1, got {self.latent_dim}")
        prior_support = supports.CATALOGUE["prior"][self.prior]
        guide_support = supports.CATALOGUE["guide family"][self.guide]
        if not supports.compatible(prior_support, guide_support):
            raise PyrovaeError(
                f"prior {self.prior!r} and guide {self.guide!r} cannot be paired: "
                + supports.mismatch_message("z", prior_support, guide_support)
            )
        check_options(f"prior {self.prior!r}", PRIORS[self.prior], self.prior_options, CONTEXT)
        check_options(
            f"guide family {self.guide!r}", FAMILIES[self.guide], self.guide_options, SIZES
        )

    @property
    def takes_labels(self) -> bool:
        return getattr(MODELS[self.model], "takes_labels", False)

    def load_data(self) -> DataSplits:
        return load_dataset(
            self.dataset,
            self.binarize,
            data_dir=self.data_dir,
            num_validation=self.num_validation,
            path=self.data_path,
        )

    def build(self, data_dim: int):
        """A fresh (model, guide) pair for data with ``data_dim`` features. The guide is
        built first: a VampPrior receives its posterior map."""
        self.validate()
        guide_builder = GUIDE_BUILDERS[self.model]
        guide = guide_builder(
            data_dim,
            self.latent_dim,
            self.guide,
            self.hidden,
            self.activation,
            **accepted_by(guide_builder, self.model_options),
            **self.guide_options,
        )
        model = MODELS[self.model](
            data_dim,
            self.latent_dim,
            self.hidden,
            self.prior,
            self.likelihood,
            self.activation,
            prior_options=self.prior_options,
            posterior=guide.posterior,
            **self.model_options,
        )
        return model, guide


def accepted_by(builder, options: dict) -> dict:
    """The entries of ``options`` that ``builder`` takes by name (a model option such as
    ``num_clusters`` reaches the guide builder only if it declares it)."""
    names = inspect.signature(builder).parameters
    return {k: v for k, v in options.items() if k in names}


def check_output_folder(out: Path) -> None:
    """Refuse an ``--out`` that exists and is not a folder, before anything is trained."""
    if out.exists() and not out.is_dir():
        raise PyrovaeError(f"--out {out} exists and is not a folder; choose another --out")


def save_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
