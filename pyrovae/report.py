"""Plain-text and Markdown tables for results printed by the CLI and examples."""

from __future__ import annotations

from collections.abc import Sequence


def _cell(value) -> str:
    if isinstance(value, float):
        if abs(value) >= 1e5:
            return f"{value:.4g}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def format_table(
    rows: Sequence[dict], columns: Sequence[str] | None = None, markdown: bool = False
) -> str:
    """Rows of dicts as an aligned text table (or a Markdown table)."""
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    if markdown:
        line = lambda vals: (
            "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"
        )  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(columns), sep, *(line(r) for r in cells)])
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])
