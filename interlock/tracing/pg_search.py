"""The search box on PostgreSQL: the same query language as on SQLite, run as a `tsquery`.

A search string means the same on both stores: plain words must all appear (`fts_query`), and the
FTS5 syntax people already use on SQLite works too ("a phrase", `OR`, `NOT`, `AND`, `prefix*`,
parentheses; `NEAR` and column filters are read as plain AND, the closest PostgreSQL has). The
string is first checked by SQLite's own FTS5 parser on an empty in-memory table, so a query that
is malformed on one store is malformed on the other (a `StoreError`, the API's 400). Each word or
phrase becomes `phraseto_tsquery('simple', ?)` (PostgreSQL splits and normalises it exactly as it
indexed the text), a `prefix*` a `to_tsquery` with `:*`, joined with `&&`, `||` and `!!`.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from typing import Any

from interlock.tracing.reads import fts_query
from interlock.tracing.schema import StoreError

_TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|(\()|(\))|([^\s()"]+))')
_local = threading.local()


def _check(query: str) -> None:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(":memory:")
        conn.execute("CREATE VIRTUAL TABLE q USING fts5 (request, response, tokenize = 'unicode61')")
    try:
        conn.execute("SELECT 1 FROM q WHERE q MATCH ?", (query,)).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"bad search query {query!r}: {exc}") from None


def tsquery_condition(q: str) -> tuple[str, list[Any]]:
    """SQL for a `tsquery` matching the search string `q`, and its parameters."""
    query = fts_query(q)
    _check(query)
    parts: list[str] = []
    params: list[Any] = []
    pending = ""  # the operator before the next operand ("" → AND when one is needed)

    def operand(sql: str, value: str | None = None) -> None:
        nonlocal pending
        if parts and parts[-1] != "(":
            parts.append(pending or "&&")  # FTS5 reads two operands side by side as AND
        pending = ""
        parts.append(sql)
        if value is not None:
            params.append(value)

    for phrase, opening, closing, word in _TOKEN.findall(query):
        if opening:
            operand("(")
        elif closing:
            parts.append(")")
        elif phrase:
            operand("phraseto_tsquery('simple', ?)", phrase.replace('""', '"'))
        elif word in ("AND", "NEAR"):
            continue
        elif word in ("OR", "NOT"):
            pending = "||" if word == "OR" else "&& !!"
        else:
            word = re.sub(r"^[\w{} ]*:", "", word).lstrip("^+-")  # column filters, initial-token marks
            if word.endswith("*"):
                stem = re.sub(r"\W+", " ", word[:-1]).split()
                if stem:
                    operand("to_tsquery('simple', ?)", f"{stem[-1].lower()}:*")
            elif word:
                operand("phraseto_tsquery('simple', ?)", word)
    sql = " ".join(parts) or "''::tsquery"
    return sql, params


__all__ = ["tsquery_condition"]
