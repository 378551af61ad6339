"""Terminal output: one rich console, tables and progress bars that degrade to plain text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sn7.utils.markdown import format_cell

console = Console(highlight=False)
if not console.is_terminal:  # logs and pipes: wide enough for AOI names, no wrapping
    console.width = 140


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*[format_cell(v) for v in row])
    console.print(table)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
