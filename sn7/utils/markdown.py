"""Tables a person reads: one number format for the terminal and for markdown reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def format_cell(value, spec: str | None = None) -> str:
    """A float to 4 decimals (1 from 10 up: seconds, minutes, counts of pixels), else `str`;
    `spec` (a format spec such as ".2f") overrides the float format."""
    if isinstance(value, float):
        if spec is not None:
            return format(value, spec)
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(
    columns: Sequence[str], rows: Iterable[Sequence], formats: Mapping[str, str] | None = None
) -> str:
    """A GitHub-flavoured markdown table (no trailing newline); `formats` maps a column name to
    the float format of its cells, e.g. {"threshold": ".2f"}."""
    specs = [(formats or {}).get(col) for col in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format_cell(v, spec) for v, spec in zip(row, specs, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
