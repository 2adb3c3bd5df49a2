"""How the command line prints result rows: table, csv, json, jsonl, line.

Values are printed whole, never cut, and nothing from data or SQL is read as
markup: a table on a terminal is drawn with rich when it is installed (cells
are ``rich.text.Text``, which rich never parses), and as plain text
otherwise. NULL is ``NULL`` in a table or line (an empty field in csv,
``null`` in json), a BLOB ``x'hex'`` (a string in json), a REAL as Python's
``repr`` (exact), an infinite REAL ``Inf``/``-Inf`` in a table and
``1e999``/``-1e999`` in json (as SQLite's ``json()`` writes it).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from typing import IO, Any

FORMATS = ("table", "csv", "json", "jsonl", "line")


def cell(value: object) -> str:
    """A value as text, for a table, a line or csv (NULL: ``NULL``)."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "x'" + value.hex() + "'"
    if isinstance(value, float):
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def json_value(value: object) -> str:
    """One value as JSON text."""
    if isinstance(value, bytes):
        return json.dumps("x'" + value.hex() + "'")
    if isinstance(value, float) and math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return json.dumps(value, ensure_ascii=False)


def json_row(columns: Sequence[str], row: Sequence[object]) -> str:
    """One row as a JSON object of column name to value."""
    return "{" + ", ".join(
        json.dumps(c, ensure_ascii=False) + ": " + json_value(v) for c, v in zip(columns, row)
    ) + "}"


def rich_console(stream: IO[str]) -> Any:
    """A rich Console on ``stream`` that reads no markup and highlights nothing,
    or ``None`` when rich is not installed (the CLI then prints plain text)."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, markup=False, highlight=False, emoji=False)


class Printer:
    """Prints the rows of statements in one format on ``stream``.

    ``terminal``: whether ``stream`` is a terminal (a table is then drawn
    with rich, if installed, with a row count after it).
    """

    def __init__(self, stream: IO[str], fmt: str, *, terminal: bool, headers: bool = True) -> None:
        self.stream = stream
        self.format = fmt
        self.terminal = terminal
        self.headers = headers

    def rows(self, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Print one statement's rows (a statement without columns prints nothing)."""
        if not columns:
            return
        getattr(self, "_" + self.format)(list(columns), rows)
        self.stream.flush()

    def _table(self, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        console = rich_console(self.stream) if self.terminal else None
        if console is not None:
            from rich.table import Table
            from rich.text import Text

            table = Table(show_header=self.headers, header_style="bold")
            for name in columns:
                table.add_column(Text(name), overflow="fold")
            for row in rows:
                table.add_row(*(Text(cell(v)) for v in row))
            console.print(table)
        else:
            texts = [[cell(v) for v in row] for row in rows]
            widths = [len(c) for c in columns] if self.headers else [0] * len(columns)
            for row in texts:
                widths = [max(w, len(t)) for w, t in zip(widths, row)]
            lines = []
            if self.headers:
                lines.append(" | ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
                lines.append("-+-".join("-" * w for w in widths))
            lines += [" | ".join(t.ljust(w) for t, w in zip(row, widths)).rstrip() for row in texts]
            self.stream.write("".join(line + "\n" for line in lines))
        if self.terminal:
            self.stream.write(f"{len(rows)} row{'' if len(rows) == 1 else 's'}\n")

    def _csv(self, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        writer = csv.writer(self.stream, lineterminator="\n")
        if self.headers:
            writer.writerow(columns)
        writer.writerows(["" if v is None else cell(v) for v in row] for row in rows)

    def _json(self, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        self.stream.write("[" + ",\n ".join(json_row(columns, row) for row in rows) + "]\n")

    def _jsonl(self, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        self.stream.write("".join(json_row(columns, row) + "\n" for row in rows))

    def _line(self, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
        width = max(len(c) for c in columns)
        blocks = ["".join(f"{c.rjust(width)} = {cell(v)}\n" for c, v in zip(columns, row)) for row in rows]
        self.stream.write("\n".join(blocks))
