"""Issue 18's "parse once": no reader outside the protocol adapters splits a stream into events or
parses a response body. The proxy splits each stream once (the adapter's splitter, in
`proxy/app.py`), its stages receive the events, and the usage is folded as they pass; a response
body is read once into the call's `ResponseView`.

The check reads the package's source (AST): a call of a stream splitter, or a JSON parse of a
response body (`response_json`, or `json.loads` in a function that reads `response_body` or a
stream's chunks, or of a local value derived from one, or of rows a SQL query selecting one of them
returned), outside `protocols/` fails it unless the
function is in `ALLOWED`, with the reason it may. A new reader asks the adapter or the view (a
recorded call's: `Adapter.response_view(call)`, or `Adapter.stored_view` from stored columns), or
argues its case here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import interlock

PACKAGE = Path(interlock.__file__).parent

#: Where wire formats live: these may split and parse (the adapters, their framings, reassembly).
PROTOCOL_DIRS = ("protocols/",)

#: Calls that split a stream into events (or reassemble one from its bytes, which splits it).
SPLITTERS = frozenset(
    {
        "event_splitter",
        "iter_events",
        "iter_messages",
        "iter_gemini_events",
        "parse_event",
        "EventSplitter",
        "MessageSplitter",
        "JsonArraySplitter",
        "GeminiSplitter",
        "reassemble_stream",
        "stream_search_text",
        "stream_head_and_tail",
    }
)
#: Names whose values (and what a function derives from them) a `json.loads` of is a parse of a response.
RESPONSE_NAMES = frozenset({"response_body", "agent_response_body", "chunks", "agent_chunks", "response_message"})

#: "module:function" → why it may split or parse a response there.
ALLOWED: dict[str, str] = {
    # The live path: one split. (The guardrails rewrite a body or re-render recorded chunks through the
    # adapter: `Adapter.rewrite_response`, on the view's one parse, and `Adapter.rewrite_chunks`.)
    "proxy/app.py:ProxyApp.relay_stream": "the one split of a live stream, whose events every stage receives",
    # Records read back (the audit, the UI, whatif, replay's comparison) read them through the adapter's
    # view (`Adapter.response_view` for a Call, `Adapter.stored_view` for stored columns); the writer's
    # search text through `Adapter.recorded_stream_text`. Replay plays a recording back through the
    # proxy (`replay/playback.py` supplies each answer): its streams are the live relay's one split.
}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


#: A SQL query's selected columns: `SELECT a, b.c FROM ...` (what its rows hold).
_SELECT = re.compile(r"\s*SELECT\s+(.*?)\s+FROM\s", re.IGNORECASE | re.DOTALL)


def _selected(text: str) -> set[str]:
    """The words of a SQL query's select list (`b.response_message` gives `b` and `response_message`)."""
    found = _SELECT.match(text)
    return set(re.findall(r"\w+", found.group(1))) if found else set()


def _mentions(node: ast.AST, names: set[str]) -> bool:
    """Whether an expression reads one of `names` (a variable, an attribute, a subscript key, or a
    column a SQL query in it selects: `rows("SELECT response_message FROM bodies ...")`)."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name | ast.Attribute) and _name(n) in names:
            return True
        if isinstance(n, ast.Constant) and (
            n.value in names or (isinstance(n.value, str) and names & _selected(n.value))
        ):
            return True
    return False


def _response_values(function: ast.AST) -> set[str]:
    """`RESPONSE_NAMES` and the local variables a function derives from them (`body =
    decoded_body(row["response_body"], ...)`), followed through assignments and loops: a
    `json.loads` of one of them parses a response. A function that only decodes other stored
    columns (headers, meta, an event's data) beside a body is not a response parse, so it needs no
    allow-listing; what is assigned into a container (`row["response_body"] = ...`) taints nothing."""
    pairs: list[tuple[ast.AST, ast.AST]] = []
    for n in ast.walk(function):
        if isinstance(n, ast.Assign):
            pairs += [(target, n.value) for target in n.targets]
        elif isinstance(n, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and n.value is not None:
            pairs.append((n.target, n.value))
        elif isinstance(n, ast.For | ast.AsyncFor | ast.comprehension):
            pairs.append((n.target, n.iter))
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            pairs.append((n.optional_vars, n.context_expr))
    tainted = set(RESPONSE_NAMES)
    grew = True
    while grew:  # to a fixed point: an assignment may come before the one that taints its value
        grew = False
        for target, value in pairs:
            if isinstance(target, ast.Name | ast.Tuple | ast.List | ast.Starred) and _mentions(value, tainted):
                for n in ast.walk(target):
                    if isinstance(n, ast.Name) and n.id not in tainted:
                        tainted.add(n.id)
                        grew = True
    return tainted


def readers(source: str) -> set[tuple[str, str]]:
    """(function, what) for each stream split or response parse in a module's source."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, scope: list[str]) -> None:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            scope = [*scope, node.name]
            if not isinstance(node, ast.ClassDef):
                tainted = _response_values(node)
                for call in ast.walk(node):
                    if not isinstance(call, ast.Call):
                        continue
                    name = _name(call.func)
                    where = ".".join(scope)
                    if name in SPLITTERS:
                        found.add((where, f"splits a stream ({name})"))
                    elif name == "response_json":
                        found.add((where, "parses a response body (response_json)"))
                    elif (
                        name == "loads"
                        and _name(getattr(call.func, "value", call.func)) == "json"
                        and any(_mentions(arg, tainted) for arg in call.args)
                    ):
                        found.add((where, "parses a response body (json.loads)"))
                return  # nested functions are read as part of this one
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(source), [])
    return found


def violations() -> list[str]:
    out: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module.startswith(PROTOCOL_DIRS) or module.startswith("scripted"):
            continue  # the adapters; the scripted provider is the upstream, speaking the wire itself
        for function, what in sorted(readers(path.read_text())):
            if f"{module}:{function}" not in ALLOWED:
                out.append(f"interlock/{module}: {function} {what}")
    return out


def test_no_reader_outside_the_protocols_splits_a_stream_or_parses_a_response() -> None:
    assert violations() == []


def test_every_allowed_reader_still_reads() -> None:
    # An entry whose function no longer splits or parses is stale: the allow-list only shrinks.
    seen: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        module = path.relative_to(PACKAGE).as_posix()
        seen |= {f"{module}:{function}" for function, _ in readers(path.read_text())}
    assert sorted(set(ALLOWED) - seen) == []


def test_the_check_finds_a_split_and_a_parse() -> None:
    source = """
import json

class Stage:
    async def chunk(self, call, data, last):
        return list(adapter.event_splitter().feed(data))

def usage(call):
    return json.loads(b"".join(c.data for c in call.chunks))

def body(call):
    return response_json(call)

def request(call):
    return json.loads(call.request_body)  # a request: not this check's business

def stored(row):
    raw = decoded_body(row["response_body"], headers)
    text = raw.decode()
    return json.loads(text)  # derived from the body through two locals: still a parse

def columns(row):
    row["meta"] = json.loads(row["meta"])  # a stored column beside the body: not a response
    row["response_body"] = bytes(row["response_body"])
    return row

def selected(store, call_id):
    rows = store.rows("SELECT b.response_message FROM bodies b WHERE call_id = ?", (call_id,))
    return json.loads(rows[0][0])  # a response column selected by SQL: a parse

def meta(store):
    rows = store.rows("SELECT meta FROM calls")
    return [json.loads(r[0]) for r in rows]  # another column: not a response
"""
    assert readers(source) == {
        ("Stage.chunk", "splits a stream (event_splitter)"),
        ("usage", "parses a response body (json.loads)"),
        ("body", "parses a response body (response_json)"),
        ("stored", "parses a response body (json.loads)"),
        ("selected", "parses a response body (json.loads)"),
    }
