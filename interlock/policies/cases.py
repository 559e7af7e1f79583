"""Table-driven policy tests: a request (and optionally the tool calls a model answers with) plus the
expected decision, run by `interlock policy test`, reported like `opa test`.

```yaml
cases:
  - name: support agents cannot use gpt-4o
    request: {agent: support-bot, model: gpt-4o}
    expect: {decision: deny, rule: support-uses-small-models}
  - name: destructive tools are stripped
    request: {agent: support-bot, model: gpt-4o-mini, tools: [get_weather, delete_file]}
    expect: {decision: modify, stripped: [delete_file]}
```

A request is built the way an agent would send it (for the route's protocol) and parsed by the same
protocol adapter the proxy uses, so a case exercises exactly what a live call would.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from interlock.core.call import Call, new_id
from interlock.core.views import ToolCall
from interlock.policies.engine import Engine, tool_denial_message
from interlock.policies.loops import LoopMemory, LoopStage
from interlock.policies.stage import apply_changes
from interlock.policies.subject import Subject
from interlock.protocols import ADAPTERS, BadRequest, known_protocol
from interlock.yamlsource import Document, SourceError, load_yaml


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolRequest(_Model):
    name: str
    arguments: dict[str, Any] = {}


class CaseRequest(_Model):
    route: str = "openai"
    protocol: str | None = Field(
        None,
        description="Defaults to the route's protocol from --config, else the route's name if it is a protocol,"
        " else mcp for a `tool` call, else openai.",
    )
    agent: str = "default"
    session: str | None = None
    model: str | None = None
    method: str = "POST"

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str | None) -> str | None:
        return None if value is None else known_protocol(value)

    path: str | None = None
    tools: tuple[str, ...] = ()
    input_chars: int = 2
    params: dict[str, Any] = {}
    stream: bool = False
    tool: ToolRequest | None = Field(None, description="An MCP tools/call.")
    host: str | None = None
    body: dict[str, Any] | None = Field(None, description="The whole request JSON (replaces the fields above).")


class CaseResponse(_Model):
    tool_calls: tuple[str, ...] = ()


class Expect(_Model):
    decision: Literal["allow", "deny", "modify"] | None = None
    rule: str | None = Field(None, description="The denying rule; for allow/modify, a rule that must have fired.")
    rules: tuple[str, ...] | None = Field(None, description="Exactly the rules that fired, in order.")
    stripped: tuple[str, ...] | None = None
    params: dict[str, Any] | None = Field(None, description="Parameters as sent upstream.")
    message: str | None = Field(None, description="A substring of the denial message.")
    limits: tuple[str, ...] | None = Field(None, description="Rules whose limits count this call.")

    @field_validator("rules", "stripped", "limits", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class Case(_Model):
    name: str
    request: CaseRequest = CaseRequest()
    response: CaseResponse | None = None
    repeat: int = Field(
        1,
        ge=1,
        le=1000,
        description="Send the request (and answer with the response's tool calls) this many times in one"
        " session, for `loop:` rules; `expect` is about the last time.",
    )
    expect: Expect


class CasesFile(_Model):
    cases: tuple[Case, ...]


@dataclass(slots=True)
class Outcome:
    """What the policy decided for a case."""

    decision: str
    rule: str | None = None
    message: str = ""
    fired: list[str] = field(default_factory=list)
    stripped: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    limits: list[str] = field(default_factory=list)
    #: The rules with `loop:` that apply (`CompiledRule`s), for repeated cases.
    loop_rules: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Result:
    case: Case
    where: str
    outcome: Outcome | None
    failures: list[str]
    ms: float

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(path: str) -> list[tuple[Case, str]]:
    """Cases with their `file:line`; raises SourceError."""
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise document.error((), "a cases file must be a mapping with `cases`")
    try:
        parsed = CasesFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error["loc"] if isinstance(p, int) or p in _known_keys(document, error["loc"]))
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise document.error(loc, f"{'.'.join(str(p) for p in error['loc'])}: {message}") from None
    out = []
    for i, case in enumerate(parsed.cases):
        line, _ = document.locate(("cases", i))
        out.append((case, f"{document.file}:{line}"))
    return out


def _known_keys(document: Document, loc: tuple[Any, ...]) -> set[Any]:
    keys: set[Any] = set()
    node: Any = document.data
    for part in loc:
        if isinstance(node, dict):
            keys |= set(node)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
    return keys


def build_call(
    request: CaseRequest, routes: dict[str, str] | None = None, deployments: dict[str, dict[str, str]] | None = None
) -> Call:
    """A Call as the proxy would hold it after identify and parse."""
    protocol = request.protocol or (routes or {}).get(request.route)
    if protocol is None:  # no config: guess from the route's name, or from an MCP tool call
        protocol = request.route if request.route in ADAPTERS else "mcp" if request.tool else "openai"
    path = request.path or ADAPTERS[protocol].default_path
    body = request.body if request.body is not None else _body(protocol, request, path)
    if request.model is not None and request.path is None:
        # A provider with the model in the URL (Gemini): the default path asks for the case's model.
        rewritten = ADAPTERS[protocol].rewrite_model(body, path, request.model)
        if rewritten is not None:
            body, path = rewritten
    call = Call(
        id=new_id(),
        route=request.route,
        protocol=protocol,
        method=request.method.upper(),
        path=path,
        agent=request.agent,
        session=request.session,
        request_body=json.dumps(body).encode() if body is not None else b"",
    )
    adapter = ADAPTERS[protocol]
    try:
        call.view = adapter.parse(call)
    except BadRequest as exc:
        raise ValueError(f"the case's request is not valid for {protocol}: {exc.message}") from None
    names = (deployments or {}).get(request.route)
    if names and (asked := call.view.rename_model(names)) is not None:
        call.meta["deployment"] = asked  # as the proxy's parse stage does
    call.model, call.stream = call.view.model, call.view.stream
    return call


def _body(protocol: str, request: CaseRequest, path: str) -> dict[str, Any] | None:
    adapter = ADAPTERS[protocol]
    if request.method.upper() != "POST" and not adapter.is_jsonrpc:
        return None
    tool = (request.tool.name, request.tool.arguments) if request.tool is not None else None
    body = adapter.sample_body(path, "x" * request.input_chars, request.model, request.tools, tool)
    if body is None or not adapter.model_api:
        return body
    if request.stream:
        body["stream"] = True
    body.update(request.params)
    return body


def decide(
    engine: Engine,
    call: Call,
    host: str | None = None,
    response_tools: tuple[str, ...] = (),
    *,
    keep_params: bool = True,
) -> Outcome:
    """Evaluate the policy for a call (no limits counted) and apply its changes to `call.request_json`."""
    evaluation = engine.evaluate(Subject.from_call(call, host))
    outcome = Outcome(
        "allow", fired=list(evaluation.fired), limits=[r.name for r in evaluation.limited], loop_rules=evaluation.loops
    )
    if evaluation.denied_by is not None:
        outcome.decision, outcome.rule, outcome.message = "deny", evaluation.denied_by.name, evaluation.message
        return outcome
    adapter = ADAPTERS[call.protocol]
    before = set(call.view.tools) if call.view is not None else set()
    if apply_changes(call, evaluation, adapter):
        outcome.decision = "modify"
    after = set(call.view.tools) if call.view is not None else set()
    outcome.stripped = sorted(before - after)
    if keep_params and isinstance(call.request_json, dict):
        outcome.params = dict(call.request_json)
    for name in response_tools:
        refused = evaluation.refused_tool(name)
        if refused is not None:
            rule, reason = refused
            outcome.decision, outcome.rule = "deny", rule.name
            outcome.message = tool_denial_message(rule, reason)
            break
    return outcome


def run_case(
    engine: Engine,
    case: Case,
    where: str,
    routes: dict[str, str] | None = None,
    hosts: dict[str, str | None] | None = None,
    deployments: dict[str, dict[str, str]] | None = None,
) -> Result:
    started = time.perf_counter()
    host = case.request.host.lower() if case.request.host else (hosts or {}).get(case.request.route)
    tools = case.response.tool_calls if case.response is not None else ()
    loops = LoopStage(LoopMemory(max_sessions=1), announce=False) if case.repeat > 1 else None
    for _ in range(case.repeat):
        try:
            call = build_call(case.request, routes, deployments)
        except ValueError as exc:
            return Result(case, where, None, [str(exc)], (time.perf_counter() - started) * 1000)
        outcome = decide(engine, call, host, tools)
        if loops is not None and outcome.decision != "deny" and outcome.loop_rules:
            asyncio.run(_loop_turn(loops, call, outcome, tools))
    failures = check(case.expect, outcome)
    return Result(case, where, outcome, failures, (time.perf_counter() - started) * 1000)


async def _loop_turn(loops: LoopStage, call: Call, outcome: Outcome, tools: tuple[str, ...]) -> None:
    """One turn of a repeated case through the loop stage: the request, then the model's tool calls
    (without arguments: a case names tools only). A loop it refuses makes the outcome a denial."""
    call.loop_rules = outcome.loop_rules
    refusal: str | None = None
    await loops.request(call)
    if call.reply is not None:
        refusal = call.error
    elif tools:
        refusal = await loops.judge_answer(call, [ToolCall(name, "{}") for name in tools])
    if refusal is not None:
        denying = [d for d in call.decisions if d.stage == "loop" and d.action != "monitor"]
        outcome.decision, outcome.message = "deny", refusal
        outcome.rule = denying[0].rule if denying else None


def check(expect: Expect, outcome: Outcome) -> list[str]:
    failures = []
    fired = ", ".join(outcome.fired) or "none"
    if expect.decision is not None and expect.decision != outcome.decision:
        why = f" by {outcome.rule}" if outcome.rule else ""
        failures.append(f"expected decision {expect.decision}, got {outcome.decision}{why} (rules fired: {fired})")
    if expect.rule is not None:
        if expect.decision == "deny" or outcome.decision == "deny":
            if outcome.rule != expect.rule:
                failures.append(f"expected rule {expect.rule!r} to decide, got {outcome.rule!r} (rules fired: {fired})")
        elif expect.rule not in outcome.fired:
            failures.append(f"expected rule {expect.rule!r} to fire (rules fired: {fired})")
    if expect.rules is not None and list(expect.rules) != outcome.fired:
        failures.append(f"expected rules {list(expect.rules)} to fire, got {outcome.fired}")
    if expect.stripped is not None and sorted(expect.stripped) != outcome.stripped:
        failures.append(f"expected tools {sorted(expect.stripped)} stripped, got {outcome.stripped}")
    if expect.params is not None:
        for key, value in expect.params.items():
            if outcome.params.get(key) != value:
                failures.append(f"expected {key}={value!r} upstream, got {outcome.params.get(key)!r}")
    if expect.message is not None and expect.message not in outcome.message:
        failures.append(f"expected the message to contain {expect.message!r}, got {outcome.message!r}")
    if expect.limits is not None and sorted(expect.limits) != sorted(outcome.limits):
        failures.append(f"expected limits from {sorted(expect.limits)}, got {sorted(outcome.limits)}")
    return failures


def run_cases(
    engine: Engine,
    paths: list[str],
    routes: dict[str, str] | None = None,
    hosts: dict[str, str | None] | None = None,
    deployments: dict[str, dict[str, str]] | None = None,
) -> list[Result]:
    """Run every case in these files; raises SourceError for a malformed cases file."""
    results = []
    for path in paths:
        for case, where in load_cases(path):
            results.append(run_case(engine, case, where, routes, hosts, deployments))
    return results


def cases_schema() -> dict[str, Any]:
    schema = CasesFile.model_json_schema()
    schema["title"] = "interlock policy test cases"
    return schema


__all__ = ["Case", "Outcome", "Result", "SourceError", "build_call", "decide", "load_cases", "run_case", "run_cases"]
