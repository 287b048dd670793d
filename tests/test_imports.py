"""``import pyrovae`` stays light: ArviZ, matplotlib and xarray load only with
``pyrovae.diagnostics``."""

import json
import subprocess
import sys

HEAVY = ("arviz", "arviz_base", "arviz_stats", "arviz_plots", "matplotlib", "xarray")


def loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return [m for m in HEAVY if m in modules]


def test_importing_the_library_loads_no_plotting_or_arviz():
    assert loaded_after("import pyrovae, pyrovae.train, pyrovae.evaluate, models, guides") == []


def test_diagnostics_load_arviz_when_used():
    assert "arviz_base" in loaded_after("import pyrovae.diagnostics")
