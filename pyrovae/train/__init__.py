"""Training: objectives (:mod:`.objectives`), one optimisation step (:mod:`.step`),
checkpoints (:mod:`.checkpoint`) and the loop ``fit`` (:mod:`.loop`)."""

from .checkpoint import CHECKPOINT_FORMAT, Checkpoint, load_checkpoint
from .divergence import DivergenceMonitor
from .early_stopping import EarlyStopping
from .loop import FitConfig, FitHistory, as_splits, fit, kl_paths
from .objectives import (
    IWAE,
    OBJECTIVES,
    SiteScale,
    check_objective,
    find_data_plate,
    make_objective,
    warmup_sites,
)
from .step import SVIStep

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "DivergenceMonitor",
    "EarlyStopping",
    "IWAE",
    "OBJECTIVES",
    "FitConfig",
    "FitHistory",
    "SVIStep",
    "SiteScale",
    "as_splits",
    "check_objective",
    "find_data_plate",
    "fit",
    "kl_paths",
    "load_checkpoint",
    "make_objective",
    "warmup_sites",
]
