"""`when:` conditions in CEL (the `common-expression-language` package): compiled once at load.

A condition sees these variables (docs/policies.md lists them with examples):

    agent    string          route   string          model    string ("" when the request names none)
    session  string ("" when none)
    request  {input_chars: int, params: map, tools: list(string), stream: bool, operation: string,
              method: string, path: string}
    tool     {name: string, arguments: map}   the MCP tool called ({name: "", arguments: {}} otherwise)

Converting the activation to CEL values is the costly part (about 10 µs), so the engine builds one
`cel.Context` per call, holding only the variables its conditions use, and shares it between rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel

from interlock.policies.subject import Subject

VARIABLES = ("agent", "session", "route", "model", "request", "tool")
REQUEST_FIELDS = ("input_chars", "params", "tools", "stream", "operation", "method", "path")
TOOL_FIELDS = ("name", "arguments")


class ConditionError(Exception):
    """A condition that does not compile, or fails the load-time checks."""


@dataclass(frozen=True, slots=True)
class Condition:
    source: str
    program: cel.Program
    variables: frozenset[str]
    #: The fields of `request` the condition reads (all of them if it uses `request` as a whole).
    request_fields: frozenset[str] = frozenset(REQUEST_FIELDS)
    #: The fields of `tool` the condition reads (all of them if it uses `tool` as a whole).
    tool_fields: frozenset[str] = frozenset(TOOL_FIELDS)

    @property
    def reads_arguments(self) -> bool:
        """Whether the result can depend on an MCP tool call's arguments (`tool.arguments`)."""
        return "tool" in self.variables and "arguments" in self.tool_fields

    def evaluate(self, context: cel.Context) -> bool:
        """True or False; raises on a run-time error (missing field, wrong type, non-boolean)."""
        result = self.program.execute(context)
        if not isinstance(result, bool):
            raise TypeError(f"the condition returned {type(result).__name__}, not a boolean")
        return result


def compile_condition(source: str) -> Condition:
    """Compile and check a condition: syntax, known variables, and types against sample calls."""
    try:
        program = cel.compile(source)
    except Exception as exc:  # the extension raises ValueError with the parser's message
        found = re.search(r"<input>:(\d+):(\d+): (.*)", str(exc))
        if found:
            raise ConditionError(
                f"CEL syntax error at column {found.group(2)}: {found.group(3).removeprefix('Syntax error: ')}"
            ) from None
        raise ConditionError(_first_line(str(exc))) from None
    names = frozenset(program.variables())
    # Comprehension variables (`tools.exists(t, ...)`) also show up as identifiers; only flag names
    # that cannot be such a binding, i.e. any name used but neither known nor bound by a macro.
    unknown = sorted(n for n in names - set(VARIABLES) if not _bound_in(n, source))
    if unknown:
        known = ", ".join(VARIABLES)
        raise ConditionError(f"unknown variable {unknown[0]!r} in condition (known: {known})")
    code = _without_literals(source)
    _check_fields(code)
    condition = Condition(
        source,
        program,
        names & set(VARIABLES),
        _fields_read(code, "request", REQUEST_FIELDS),
        _fields_read(code, "tool", TOOL_FIELDS),
    )
    _check_types(condition)
    return condition


def _bound_in(name: str, source: str) -> bool:
    # A macro binding reads `.all(x,`, `.exists(x,`, `.exists_one(x,`, `.map(x,`, `.filter(x,`.
    compact = source.replace(" ", "")
    return any(f".{macro}({name}," in compact for macro in ("all", "exists", "exists_one", "map", "filter"))


def _without_literals(source: str) -> str:
    """The source with every string literal emptied (`""`) and comments dropped: only the names it reads.

    The `cel` package tells which variables an expression references, not which of their fields, so
    the fields are read from the source; a word inside a string or a comment must not count. CEL
    strings: '...' "..." and triple-quoted, raw with an r/R prefix (backslash is then literal)."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if char not in "\"'":
            out.append(char)
            i += 1
            continue
        start = i
        while start > 0 and source[start - 1] in "rRbB":
            start -= 1
        prefix = source[start:i]
        raw = len(prefix) <= 2 and "r" in prefix.lower() and (start == 0 or not _word(source[start - 1]))
        quote = char * 3 if source.startswith(char * 3, i) else char
        i += len(quote)
        while i < n and not source.startswith(quote, i):
            i += 2 if source[i] == "\\" and not raw else 1
        i += len(quote)
        out.append('""')
    return "".join(out)


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _check_fields(code: str) -> None:
    for variable, fields in (("request", REQUEST_FIELDS), ("tool", TOOL_FIELDS)):
        for match in re.finditer(rf"(?<![\w.]){variable}\s*\.\s*([A-Za-z_]\w*)", code):
            if match.group(1) not in fields:
                raise ConditionError(f"{variable} has no field {match.group(1)!r} (fields: {', '.join(fields)})")


def _fields_read(code: str, variable: str, fields: tuple[str, ...]) -> frozenset[str]:
    """The fields of `variable` that `code` (literals emptied) reads; all of them if it uses the
    variable as a whole (`tool["arguments"]`, `[tool].exists(...)`, a macro variable so named)."""
    used = re.findall(rf"(?<![\w.]){variable}\s*\.\s*([A-Za-z_]\w*)", code)
    bare = len(re.findall(rf"(?<![\w.]){variable}\b", code))
    if bare != len(used):
        return frozenset(fields)
    return frozenset(used)


def _check_types(condition: Condition) -> None:
    """Evaluate against typical calls: a type error or a non-boolean in all of them is a load error.

    CEL has no schema here, so this catches what it can (`request.input_chars > "x"`, `agent + 1`)
    without flagging conditions that only fail for some calls (a missing param is a run-time matter)."""
    problems = []
    for sample in _SAMPLES:
        try:
            condition.evaluate(context_for(condition.variables, sample))
            return
        except KeyError:
            return  # a param or tool argument absent in this sample: fine
        except Exception as exc:  # noqa: BLE001 - every CEL evaluation failure is a candidate type error
            problems.append(_first_line(str(exc)))
    raise ConditionError(f"type error in condition: {problems[0]}")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "invalid expression"
    # The extension's messages go on with advice; the first sentence says what is wrong.
    return line.removeprefix("ERROR: ").split(". ")[0]


def activation(
    subject: Subject, names: frozenset[str], request_fields: frozenset[str] = frozenset(REQUEST_FIELDS)
) -> dict[str, Any]:
    """The variables a condition sees for this call (only those in `names`, and of `request`, only
    `request_fields`)."""
    values: dict[str, Any] = {}
    for name in names:
        if name == "agent":
            values["agent"] = subject.agent
        elif name == "session":
            values["session"] = subject.session or ""
        elif name == "route":
            values["route"] = subject.route
        elif name == "model":
            values["model"] = subject.model or ""
        elif name == "request":
            request: dict[str, Any] = {}
            for key in request_fields:
                if key == "tools":
                    request["tools"] = list(subject.tools)
                else:
                    request[key] = getattr(subject, key)
            values["request"] = request
        elif name == "tool":
            arguments = subject.tool_arguments if isinstance(subject.tool_arguments, dict) else {}
            values["tool"] = {"name": subject.tool or "", "arguments": arguments}
    return values


def context_for(
    names: frozenset[str], subject: Subject, request_fields: frozenset[str] = frozenset(REQUEST_FIELDS)
) -> cel.Context:
    return cel.Context(activation(subject, names, request_fields))


def _samples() -> list[Subject]:
    chat = Subject(
        route="openai",
        protocol="openai",
        agent="sample-agent",
        session="sample-session",
        model="gpt-4o-mini",
        method="POST",
        path="/chat/completions",
        operation="chat",
        tools=("get_weather",),
        input_chars=120,
        params={"max_tokens": 256, "temperature": 0.5},
        stream=True,
    )
    mcp = Subject(
        route="tools",
        protocol="mcp",
        agent="sample-agent",
        session="",
        model=None,
        method="POST",
        path="/mcp",
        operation="tools/call",
        tools=("run_shell",),
        tool="run_shell",
        tool_arguments={"command": "ls"},
    )
    return [chat, mcp]


_SAMPLES = _samples()

__all__ = ["Condition", "ConditionError", "VARIABLES", "activation", "compile_condition", "context_for"]
