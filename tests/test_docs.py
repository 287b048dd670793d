"""The documentation builds with warnings as errors, and its code runs as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="install the test extras: pip install -e '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "api.html").exists() and (tmp_path / "user-guide.html").exists()


def python_blocks(page: str) -> str:
    """The page's ```python blocks as one script, with training budgets cut for the test."""
    code = "\n".join(re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S))
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    code = re.sub(r"num_samples=\d+", "num_samples=30", code)
    return code.replace("warmup_epochs=1", "warmup_epochs=0")


@pytest.mark.parametrize("page", ["user-guide.md", "architecture.md"])
def test_the_code_on_each_page_runs(page, tmp_path):
    script = tmp_path / "page.py"
    script.write_text(python_blocks(page))
    assert script.read_text().strip(), f"{page} has no python blocks"
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=False,
        cwd=DOCS.parent,
        env={"MPLBACKEND": "Agg", "PYTHONPATH": str(DOCS.parent), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_page_points_outside_the_repository():
    for path in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        text = path.read_text()
        assert "../shared" not in text and "REFERENCES.md" not in text, path
