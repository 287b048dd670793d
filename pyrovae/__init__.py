"""pyrovae: variational autoencoders as Pyro model/guide pairs.

The engine (``data``, ``train``, ``evaluate``, ``diagnostics``, ``distributions``) is
generic over any Pyro model/guide pair; concrete models and guides live in the ``models``
and ``guides`` packages.
"""

import pyrovae.distributions  # noqa: F401  (registers closed-form KLs on import)
from pyrovae.data import DataSplits, load_dataset
from pyrovae.errors import PyrovaeError, TrainingDiverged
from pyrovae.train import FitConfig, FitHistory, fit

# isort: split
# train before evaluate: the training loop reports evaluate's estimate_elbo
from pyrovae.evaluate import estimate_elbo

__version__ = "0.1.0"
__all__ = [
    "DataSplits",
    "FitConfig",
    "FitHistory",
    "PyrovaeError",
    "TrainingDiverged",
    "estimate_elbo",
    "fit",
    "load_dataset",
]
