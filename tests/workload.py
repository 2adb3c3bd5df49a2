"""Seeded random workloads and a reference model, for the fault-injection tests.

A workload is a list of transactions; each is one SQL string run by one
``exec`` call (a single statement, or ``BEGIN; ...; COMMIT;``). It mixes
inserts, updates, deletes, schema changes, large and small transactions and
VACUUM. Values are literals drawn from the seed, so the same workload gives
the same content everywhere. The model runs it on stdlib sqlite3 in memory
and records the content after each transaction.
"""

from __future__ import annotations

import random
import sqlite3


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    return "".join(rng.choice("abcdefghij") for _ in range(min(n, 16))) * (n // 16 + 1)


def make_workload(seed: int, transactions: int = 10, big_rows: int = 120) -> list[str]:
    """A reproducible list of transactions (see the module docstring)."""
    rng = random.Random(seed)
    out = ["CREATE TABLE t0(id INTEGER PRIMARY KEY, a TEXT, b INTEGER)"]
    tables = {"t0": ["id", "a", "b"]}
    next_id = {"t0": 1}
    for step in range(transactions):
        kind = rng.choice(["small", "small", "big", "update", "delete", "schema", "mixed", "vacuum"])
        table = rng.choice(sorted(tables))

        def insert(count: int, size: tuple[int, int], table: str = table) -> str:
            values = []
            for _ in range(count):
                values.append(f"({next_id[table]}, '{_text(rng, *size)}', {rng.randint(-1000, 1000)})")
                next_id[table] += 1
            return f"INSERT INTO {table}(id, a, b) VALUES {', '.join(values)}"

        if kind == "small":
            out.append(insert(rng.randint(1, 3), (10, 200)))
        elif kind == "big":
            out.append(f"BEGIN; {insert(big_rows, (300, 700))}; COMMIT;")
        elif kind == "update":
            out.append(
                f"UPDATE {table} SET a = '{_text(rng, 5, 900)}', b = b + 1 "
                f"WHERE id % {rng.randint(2, 7)} = {rng.randint(0, 1)}"
            )
        elif kind == "delete":
            out.append(f"DELETE FROM {table} WHERE id % {rng.randint(2, 5)} = 0")
        elif kind == "schema":
            choice = rng.choice(["table", "index", "column"])
            if choice == "table" or len(tables) == 1:
                name = f"t{len(tables)}"
                tables[name] = ["id", "a", "b"]
                next_id[name] = 1
                out.append(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
            elif choice == "index":
                out.append(f"CREATE INDEX IF NOT EXISTS {table}_b{step} ON {table}(b)")
            else:
                column = f"c{step}"
                tables[table].append(column)
                out.append(f"ALTER TABLE {table} ADD COLUMN {column} TEXT DEFAULT '{_text(rng, 1, 20)}'")
        elif kind == "mixed":
            out.append(
                f"BEGIN; {insert(rng.randint(5, 40), (50, 400))}; "
                f"UPDATE {table} SET b = -b WHERE id % 3 = 1; "
                f"DELETE FROM {table} WHERE id % 11 = 0; COMMIT;"
            )
        else:
            out.append("VACUUM")
    return out


def content(query) -> tuple:
    """Schema and every row of every table, in a canonical order.

    ``query(sql)`` returns a list of row tuples.
    """
    schema = sorted(query("SELECT type, name, tbl_name, sql FROM sqlite_schema"))
    rows = []
    for (name,) in sorted(query("SELECT name FROM sqlite_schema WHERE type = 'table'")):
        rows.append((name, sorted(query(f'SELECT * FROM "{name}"'), key=repr)))
    return (tuple(schema), tuple(rows))


def model_states(workload: list[str]) -> list[tuple]:
    """The content before the workload and after each of its transactions."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    query = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
    states = [content(query)]
    for sql in workload:
        conn.executescript(sql)
        states.append(content(query))
    conn.close()
    return states
