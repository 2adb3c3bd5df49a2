"""Where one SQL statement ends and the next begins, as SQLite itself says.

Both engines split a script with :func:`split_statements` and run its
statements one by one, so ``query``/``run`` can refuse a second statement
before running the first, and ``exec`` returns one result per statement.

Nothing here tokenizes SQL on its own: every answer comes from SQLite's
tokenizer through ``sqlite3.complete_statement`` (``sqlite3_complete``),
which knows quoted strings and identifiers, both kinds of comment, and the
``BEGIN ... END`` body of ``CREATE TRIGGER``.

- A boundary is a semicolon where the text since the last boundary is a
  complete statement: a ``;`` inside a string, a comment or a trigger body
  leaves the text incomplete, so it is no boundary.
- Whether a piece holds a statement at all (rather than only white space and
  comments) is read from the same state machine, by probing it with two
  suffixes (see :func:`_holds_no_token`).
"""

from __future__ import annotations

from sqlite3 import complete_statement

from ..errors import Error, SqlError

# sqlite3_complete's states after a text (complete.c): 0 nothing seen yet,
# 1 after a statement's ";", 2-4 inside a statement (2 ordinary, 3 after
# EXPLAIN, 4 after CREATE [TEMP]), 5-7 inside CREATE TRIGGER (5 body,
# 6 after a ";" in it, 7 after "; END"). complete_statement(t) is true when t
# ends in state 1.
#
# After " EXPLAIN CREATE TRIGGER;" only states 0 and 1 (EXPLAIN -> 3,
# CREATE -> 4, TRIGGER -> 5, ";" -> 6) and 5-7 (every token -> 5, ";" -> 6)
# end incomplete; states 2, 3 and 4 reach 1.
_NOT_FROM_NOTHING_OR_TRIGGER = "\n EXPLAIN CREATE TRIGGER;"
# After " x;" states 0 and 1 reach 1 (x -> 2, ";" -> 1) and 5-7 do not
# (x -> 5, ";" -> 6).
_FROM_NOTHING_NOT_TRIGGER = "\n x;"


def check_sql(sql: object) -> str:
    """``sql`` if it is text SQLite can read whole; a clear error otherwise.

    SQLite reads SQL as a C string: a NUL character would silently end the
    text there, so it is refused rather than cut.
    """
    if not isinstance(sql, str):
        raise Error(f"sql must be a str, not {type(sql).__name__}")
    nul = sql.find("\x00")
    if nul >= 0:
        raise SqlError(
            f"the SQL text contains a NUL character at offset {nul}; SQLite would "
            "stop reading there, so nothing of it was run (pass such values as parameters)"
        )
    return sql


def _is_blank(fragment: str) -> bool:
    """Whether ``fragment`` is only white space and comments, by SQLite's tokenizer.

    ``fragment`` must hold no boundary after a token (only ``;`` of empty
    statements), as every fragment :func:`split_statements` passes here does:
    SQLite's state after it is then 0 or 1 (no token), 2-4 (a statement's
    tokens) or 5-7 (an unfinished trigger), and the two probes single out
    0 and 1, which every token leaves alike. Each
    probe starts with a newline, which ends a ``--`` comment the fragment may
    end in.
    """
    if complete_statement(fragment + _NOT_FROM_NOTHING_OR_TRIGGER):
        return False  # the common case: a statement's tokens, one call
    if complete_statement(fragment + _FROM_NOTHING_NOT_TRIGGER):
        return True
    # Incomplete either way: an unfinished trigger or string, or a "/*" comment
    # left open, which SQLite's parser reads as running to the end of the text
    # (white space) where complete_statement calls it incomplete.
    closed = fragment + "*/"
    return not complete_statement(closed + _NOT_FROM_NOTHING_OR_TRIGGER) and complete_statement(
        closed + _FROM_NOTHING_NOT_TRIGGER
    )


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, in order, each with its own text; blank ones left out.

    Each statement's text runs from the end of the one before (with the
    comments and empty statements in between) to its own ``;``, exactly the
    text SQLite prepares for it; the last one may have no ``;``.
    """
    if type(sql) is not str or "\x00" in sql:  # check_sql's cases, without its call when fine
        check_sql(sql)
    statements = []
    start = 0
    at = sql.find(";")
    while at >= 0:
        piece = sql[start : at + 1]
        # A blank piece (only comments and ";") stays in front of the next
        # statement's text, as SQLite keeps it in the text it prepares.
        # Not blank, asked cheapest first: a piece whose first non-space character is a
        # letter starts with a keyword or name, a token (neither white space nor a
        # comment); then _is_blank's common case, without its call; then _is_blank.
        if complete_statement(piece) and (
            piece.lstrip()[:1].isalpha()
            or complete_statement(piece[:-1] + _NOT_FROM_NOTHING_OR_TRIGGER)
            or not _is_blank(piece[:-1])
        ):
            statements.append(piece)
            start = at + 1
        at = sql.find(";", at + 1)
    rest = sql[start:]
    # _is_blank's common case (a statement's tokens) first, without its call.
    if complete_statement(rest + _NOT_FROM_NOTHING_OR_TRIGGER) or not _is_blank(rest):
        statements.append(rest)
    return statements


def is_blank_sql(sql: str) -> bool:
    """Whether ``sql`` holds no statement (only white space, comments and semicolons)."""
    return not split_statements(sql)
