"""Statement boundaries come from SQLite: issue 9 item 1 (and the NUL of item 10).

Regression tests run on both backends; the property test holds
:func:`sqlkv.engine.statements.split_statements` to what SQLite itself prepares when
stdlib ``sqlite3`` runs the same script.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlkv
from sqlkv.engine.statements import is_blank_sql, split_statements


def test_an_insert_after_a_block_comment_writes_its_row(connect_db, new_store):
    """Reproduction (issue 9 item 1, snapshot): ``run("/* note */ INSERT INTO t
    VALUES (1)")`` returned ``changes=0`` and wrote nothing."""
    store = new_store()
    db = connect_db(store)
    db.exec("CREATE TABLE t(x)")
    result = db.run("/* note */ INSERT INTO t VALUES (1)")
    assert result.changes == 1 and result.last_insert_rowid == 1
    db.close()
    db = connect_db(store)
    assert db.query("SELECT x FROM t").rows == [(1,)]


async def test_a_query_after_a_block_comment_returns_its_rows(open_db):
    """Reproduction (issue 9 item 1, pages): ``query("/* c */ SELECT 42")``
    raised a bare ``IndexError``."""
    db = await open_db()
    result = await db.query("/* c */ SELECT 42 AS answer")
    assert result.columns == ["answer"] and result.rows == [(42,)]
    results = await db.exec("/* a; */ SELECT 1; -- b; /*\n /* c */ SELECT 2 /* d */; /* e")
    assert [r.rows for r in results] == [[(1,)], [(2,)]]


def test_run_refuses_two_statements_after_a_comment_before_running_either(connect_db):
    """Reproduction (issue 9 item 1, pages): ``run("/* c */ UPDATE t SET x=x+10;
    DELETE FROM t")`` ran both statements, deleting every row."""
    db = connect_db()
    db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    for sql in (
        "/* c */ UPDATE t SET x=x+10; DELETE FROM t",
        "/* c */ UPDATE t SET x=x+10; /* d */ DELETE FROM t /* e */",
        "-- c\nUPDATE t SET x=x+10; DELETE FROM t",
    ):
        with pytest.raises(sqlkv.Error, match="exactly one statement"):
            db.run(sql)
        with pytest.raises(sqlkv.Error, match="exactly one statement"):
            db.query(sql)
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(1,), (2,)]
    # Comments and semicolons around one statement are still one statement.
    assert db.run("/* c */ UPDATE t SET x = x + 10; -- done ;\n ; /* ; */").changes == 2
    assert db.query("SELECT x FROM t ORDER BY x").rows == [(11,), (12,)]


def test_sql_with_a_nul_character_is_a_clear_error_and_runs_nothing(connect_db):
    """Reproduction (issue 9 item 10): ``run("SELECT 1\\x00; ...")`` raised a raw
    ``ValueError``."""
    db = connect_db()
    db.exec("CREATE TABLE t(x)")
    for call in (db.run, db.query, db.exec):
        with pytest.raises(sqlkv.SqlError, match="NUL character at offset 8"):
            call("SELECT 1\x00; INSERT INTO t VALUES (1)")
        with pytest.raises(sqlkv.SqlError, match="NUL character at offset 24"):
            call("INSERT INTO t VALUES (1)\x00")
    assert db.query("SELECT count(*) FROM t").rows == [(0,)]
    # As a bound value it is just a character.
    db.run("INSERT INTO t VALUES (?)", ["a\x00b"])
    assert db.query("SELECT x FROM t").rows == [("a\x00b",)]


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("", []),
        (" ;; -- x\n /* y; */ ;", []),
        ("/* open comment, SQLite's parser reads it as white space", []),
        ("SELECT 1; /* open", ["SELECT 1;"]),
        ("SELECT 1 -- no newline", ["SELECT 1 -- no newline"]),
        ("SELECT ';', \"a;b\", [c;], `d;` ; SELECT 2", ["SELECT ';', \"a;b\", [c;], `d;` ;", " SELECT 2"]),
        (
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 'end;'; END; SELECT 3",
            ["CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 'end;'; END;", " SELECT 3"],
        ),
        ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;", ["CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;"]),
        ("SELECT 'unterminated; SELECT 2", ["SELECT 'unterminated; SELECT 2"]),
    ],
)
def test_split_statements_cases(sql, statements):
    assert split_statements(sql) == statements
    assert is_blank_sql(sql) == (not statements)


# -- the property test against stdlib sqlite3 -------------------------------------

_TRICKY = st.lists(
    st.sampled_from([";", "--", "/*", "*/", "'", '"', "[", "]", "`", "a", " ", "\n", "END", "begin", "x;y"]),
    max_size=6,
).map("".join)


def _quoted(quote: str, close: str) -> st.SearchStrategy[str]:
    if quote == close:
        return _TRICKY.map(lambda t: quote + t.replace(quote, quote * 2) + close)
    return _TRICKY.map(lambda t: quote + t.replace(close, "") + close)


_STRING = _quoted("'", "'")
_IDENT = st.one_of(_quoted('"', '"'), _quoted("`", "`"), _quoted("[", "]"), st.just("plain"))
def _without(text: str, part: str) -> str:
    """``text`` with every ``part`` taken out, including those the removal makes."""
    while part in text:
        text = text.replace(part, "")
    return text


_COMMENT = st.one_of(
    _TRICKY.map(lambda t: "/*" + _without(t, "*/") + "*/"),
    _TRICKY.map(lambda t: "--" + t.replace("\n", "") + "\n"),
)
#: What may stand between two tokens: white space, comments.
_GAP = st.lists(st.one_of(st.sampled_from([" ", "\n", "\t"]), _COMMENT), min_size=1, max_size=3).map("".join)


@st.composite
def _statement(draw: st.DrawFn, number: int) -> str:
    gap = lambda: draw(_GAP)  # noqa: E731
    kind = draw(st.sampled_from(["select", "insert", "create", "trigger"]))
    if kind == "select":
        return f"SELECT{gap()}{draw(_STRING)}{gap()}AS{gap()}{draw(_IDENT)}"
    if kind == "insert":
        return f"INSERT{gap()}INTO t1 VALUES{gap()}({draw(_STRING)})"
    if kind == "create":
        return f"CREATE TABLE IF NOT EXISTS{gap()}{draw(_IDENT)}({draw(_IDENT)})"
    # A trigger on t0, which nothing writes: it never fires, so each statement
    # SQLite runs is one of the script's own.
    body = "".join(
        f"{gap()}{draw(st.sampled_from(['SELECT', 'select']))}{gap()}{draw(_STRING)};{gap()}"
        f"INSERT INTO t1 VALUES ({draw(_STRING)});{gap()}"
        # An END that does not end the trigger: SQLite's tokenizer tells them apart.
        f"SELECT CASE WHEN 1 THEN {draw(_STRING)} {draw(st.sampled_from(['END', 'end']))};"
        for _ in range(draw(st.integers(1, 3)))
    )
    end = draw(st.sampled_from(["END", "end", "End"]))
    return f"CREATE TRIGGER{gap()}tr{number}{gap()}AFTER INSERT ON t0 BEGIN{body}{gap()}{end}"


@st.composite
def _script(draw: st.DrawFn) -> str:
    parts = ["CREATE TABLE t0(a); CREATE TABLE t1(a);"]
    count = draw(st.integers(1, 6))
    for number in range(count):
        parts.append(draw(st.one_of(st.just(""), _GAP)))
        parts.append(draw(_statement(number)))
        parts.append(draw(st.one_of(st.just(""), _GAP)))
        parts.append(draw(st.sampled_from([";", ";", "; ;"])) if number < count - 1 else draw(st.sampled_from(["", ";"])))
    parts.append(draw(st.one_of(st.just(""), _GAP)))
    return "".join(parts)


def _statements_sqlite_runs(script: str) -> list[str]:
    """The text of each statement SQLite prepares and runs for ``script`` (stdlib
    ``executescript``: prepare, run, go on with the tail)."""
    conn = sqlite3.connect(":memory:")
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        conn.executescript(script)
    finally:
        conn.close()
    return seen


@settings(max_examples=200, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])
@given(_script())
def test_split_statements_matches_what_sqlite_prepares(script):
    assert split_statements(script) == _statements_sqlite_runs(script)


@settings(max_examples=200, deadline=timedelta(seconds=5))
@given(st.lists(st.one_of(_GAP, st.just(";")), max_size=6).map("".join))
def test_text_of_comments_and_semicolons_holds_no_statement(text):
    assert split_statements(text) == [] == _statements_sqlite_runs(text)
    assert is_blank_sql(text)
