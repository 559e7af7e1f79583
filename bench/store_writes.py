"""The store's insert step three ways, on the same rows (not part of `make bench`): what decided
that the recorder's hot write path stays on the stdlib connection (docs/store.md, "Dependencies").

    python -m bench.store_writes                  # 4,000 2 KB calls, batches of 256, 5 rounds
    python -m bench.store_writes --chunks 32      # streamed: 32 chunk rows per call
    python -m bench.store_writes --export         # copying calls between files (export, import)

The rows are built once by the writer's own builder (`writing.Rows.add_call`), then inserted into
a fresh store file per round, one transaction per batch, by:
- `multi-row`: what the writer does (`writing.insert_rows`: up to 128 rows per INSERT statement);
- `executemany`: the stdlib's one statement per row (what the writer did before);
- `insert_all`: sqlite-utils' `Table.insert_all(..., ignore=True)` (it takes dicts: the rows are
  turned into dicts inside the timed part, since a writer on it would have to build dicts).
All three insert the tables a call has (calls, bodies, chunks, attempts, events); the full-text
entry and the chain link are the same statements whichever way, and left out so the difference is
not diluted. Figures are CPU seconds of this process (`time.process_time`), the best of the rounds
(the machine is shared: the best round is the least disturbed), as rows and calls per CPU second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interlock.core.call import Attempt, Call, Chunk, new_id
from interlock.core.sqlite import transaction
from interlock.tracing.rows import INSERT_ATTEMPT, INSERT_BODY, INSERT_CALL, INSERT_CHUNK, INSERT_EVENT, insert_columns
from interlock.tracing.store import SQLiteStore
from interlock.tracing.transfer import copy_calls
from interlock.tracing.writing import Rows, insert_rows

PROSE = (
    "The lighthouse keeper logged the weather every hour: wind from the north-west, a swell that "
    "broke white over the outer rocks, and a fog bank that came and went with the tide. "
)
TABLES = (
    ("calls", INSERT_CALL),
    ("bodies", INSERT_BODY),
    ("chunks", INSERT_CHUNK),
    ("attempts", INSERT_ATTEMPT),
    ("events", INSERT_EVENT),
)

Batch = list[tuple[str, str, list[tuple[Any, ...]]]]  # (table, one-row INSERT, rows)


def make_call(n: int, chunks: int) -> Call:
    content = json.dumps((PROSE * 9)[:1900])
    request = f'{{"model":"gpt-4o","messages":[{{"role":"user","content":{content}}}]}}'.encode()
    call = Call(
        id=new_id(),
        route="openai",
        protocol="openai",
        method="POST",
        path="/chat/completions",
        agent=f"agent-{n % 8}",
        session=f"session-{n % 50}",
        request_headers=[("content-type", "application/json")],
        request_body=request,
        model="gpt-4o",
        status=200,
        response_headers=[("content-type", "application/json")],
        input_tokens=420,
        output_tokens=40,
        stream=bool(chunks),
    )
    message = json.dumps({"choices": [{"message": {"role": "assistant", "content": PROSE[:200]}}]})
    if chunks:
        call.chunks = [Chunk(float(i), b'data: {"choices":[{"delta":{"content":"word "}}]}\n\n') for i in range(chunks)]
    else:
        call.response_body = message.encode()
    call.attempts = [Attempt("primary", "http://upstream/v1/chat/completions", "gpt-4o", 0.0, 20.0, 5.0, 200)]
    return call


def batches(calls: int, size: int, chunks: int) -> list[Batch]:
    out: list[Batch] = []
    for start in range(0, calls, size):
        rows = Rows()
        for n in range(start, min(calls, start + size)):
            rows.add_call(make_call(n, chunks), "full")
        lists = (rows.calls, rows.bodies, rows.chunks, rows.attempts, rows.events)
        out.append([(table, sql, list(table_rows)) for (table, sql), table_rows in zip(TABLES, lists, strict=True)])
    return out


def multi_row(store: SQLiteStore, batch: Batch) -> None:
    with transaction(store.conn):
        for _, sql, rows in batch:
            insert_rows(store.conn, sql, rows)


def executemany(store: SQLiteStore, batch: Batch) -> None:
    with transaction(store.conn):
        for _, sql, rows in batch:
            store.conn.executemany(sql, rows)


def insert_all(store: SQLiteStore, batch: Batch) -> None:
    db = store.db
    with transaction(store.conn):
        for table, sql, rows in batch:
            if rows:
                columns = insert_columns(sql)
                db.table(table).insert_all((dict(zip(columns, row, strict=True)) for row in rows), ignore=True)


WAYS: dict[str, Callable[[SQLiteStore, Batch], None]] = {
    "multi-row": multi_row,
    "executemany": executemany,
    "insert_all": insert_all,
}


def measure(way: Callable[[SQLiteStore, Batch], None], work: Sequence[Batch], folder: Path) -> float:
    with SQLiteStore(folder / f"{way.__name__}-{time.monotonic_ns()}.db") as store:
        _ = store.db  # sqlite-utils imported and wrapped before timing (the writer would hold one)
        began = time.process_time()
        for batch in work:
            way(store, batch)
        return time.process_time() - began


def export_copy_calls(source: SQLiteStore, dest: SQLiteStore) -> None:
    copy_calls(dest.conn, source.path, "1", [], writer=dest.writer)


def export_insert_all(source: SQLiteStore, dest: SQLiteStore) -> None:
    # The rows through Python: read from the source with sqlite-utils, written with insert_all.
    with transaction(dest.conn):
        for table, _ in TABLES:
            dest.db.table(table).insert_all(source.db.table(table).rows, ignore=True)
        fts = source.db.table("calls_fts").rows_where(select="rowid, request, response")
        dest.db.table("calls_fts").insert_all(fts)  # `seq` was copied: the same rowids


def export(args: argparse.Namespace, folder: Path) -> None:
    """Copying a store's calls into another file (what `export`/`import_from` do), two ways."""
    with SQLiteStore(folder / "source.db") as source:
        for start in range(0, args.calls, args.batch):  # written by the recorder's own path
            rows = Rows()
            for n in range(start, min(args.calls, start + args.batch)):
                rows.add_call(make_call(n, args.chunks), "full")
            source.write_rows(rows)
        best = {"ATTACH + INSERT…SELECT": float("inf"), "rows → insert_all": float("inf")}
        for _ in range(args.rounds):
            for name, way in zip(best, (export_copy_calls, export_insert_all), strict=True):
                with SQLiteStore(folder / f"dest-{time.monotonic_ns()}.db") as dest:
                    _ = dest.db, source.db
                    began = time.process_time()
                    way(source, dest)
                    best[name] = min(best[name], time.process_time() - began)
    print(f"copying {args.calls:,} calls with their search entries into a new file (copy_calls also links them)")
    for name, seconds in best.items():
        print(f"{name:<24} {seconds:>7.3f} CPU s {args.calls / seconds:>9,.0f} calls/s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256, help="calls per transaction (store.batch_size)")
    parser.add_argument("--chunks", type=int, default=0, help="chunk rows per call (0: non-streamed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--export", action="store_true", help="measure copying calls between files instead")
    args = parser.parse_args(argv)
    if args.export:
        with tempfile.TemporaryDirectory(prefix="bench-store-writes-") as folder:
            export(args, Path(folder))
        return
    work = batches(args.calls, args.batch, args.chunks)
    total_rows = sum(len(rows) for batch in work for _, _, rows in batch)
    best = dict.fromkeys(WAYS, float("inf"))
    with tempfile.TemporaryDirectory(prefix="bench-store-writes-") as folder:
        for _ in range(args.rounds):
            for name, way in WAYS.items():  # interleaved, so a busy spell hits every way alike
                best[name] = min(best[name], measure(way, work, Path(folder)))
    print(f"{args.calls:,} calls ({args.chunks} chunks each), {total_rows:,} rows, batches of {args.batch}")
    print(f"{'way':<12} {'CPU s':>7} {'rows/s':>10} {'calls/s':>9} {'vs multi-row':>13}")
    for name, seconds in best.items():
        print(
            f"{name:<12} {seconds:>7.3f} {total_rows / seconds:>10,.0f} {args.calls / seconds:>9,.0f}"
            f" {seconds / best['multi-row']:>12.2f}x"
        )


if __name__ == "__main__":
    main()
