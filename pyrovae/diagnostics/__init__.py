"""ArviZ diagnostics of guides: DataTrees of guide draws, PSIS k-hat, ESS, plots."""

from .datatree import log_ratios, open_datatree, save_datatree, to_datatree
from .elpd import compare_guides, elpd_data
from .psis import importance_ess, khat_threshold, psis, psis_khat, summarize

__all__ = [
    "compare_guides",
    "elpd_data",
    "importance_ess",
    "khat_threshold",
    "log_ratios",
    "open_datatree",
    "psis",
    "psis_khat",
    "save_datatree",
    "summarize",
    "to_datatree",
]
