"""The README's two commands go through the Makefile: a first `make` interrupted while it
made the virtual environment must not leave one that every later `make` trips over."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_interrupted_venv_is_made_again_and_completed(tmp_path):
    # the state a Ctrl-C during ensurepip leaves: a python, no pip, no stamp
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    planned = subprocess.run(
        ["make", "-n", "-C", str(tmp_path), ".venv/.created", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m venv .venv" in planned and "touch .venv/.created" in planned
    # and that first step completes the broken environment (offline: ensurepip's wheel)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], check=False)
    assert pip.returncode == 0


def test_a_made_venv_is_not_made_again(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".created").touch()
    planned = subprocess.run(
        ["make", "-n", "-C", str(tmp_path), ".venv/.created"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m venv" not in planned
