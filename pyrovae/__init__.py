"""pyrovae: variational autoencoders as Pyro model/guide pairs.

The engine (``data``, ``train``, ``evaluate``, ``diagnostics``, ``distributions``) is
generic over any Pyro model/guide pair; concrete models and guides live in the ``models``
and ``guides`` packages.
"""

import pyrovae.distributions  # noqa: F401  (registers closed-form KLs on import)
from pyrovae.data import DataSplits, load_dataset
from pyrovae.train import FitConfig, FitHistory, estimate_elbo, fit

__version__ = "0.1.0"
__all__ = ["DataSplits", "FitConfig", "FitHistory", "estimate_elbo", "fit", "load_dataset"]
