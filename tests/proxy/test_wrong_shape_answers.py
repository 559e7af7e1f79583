"""An upstream's well-formed JSON in the wrong shape (a string where Bedrock Converse has its `output`
object, a number where Gemini has its `candidates` list) reads as no message: relayed as it came, the
call recorded with a `guardrails skip` decision naming the gap, never interlock's own 500. One shared interlock: each test scripts its own answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.proxy.routing_support import collect_calls, finished
from tests.proxy.test_bedrock import MODEL as BEDROCK_MODEL
from tests.proxy.test_bedrock import ROUTE_KEY, bedrock_route
from tests.proxy.test_gemini import MODEL as GEMINI_MODEL
from tests.proxy.test_gemini import gemini_route

EMAIL = "jane.roe@acme-corp.io"

CONVERSE = f"/bedrock/model/{BEDROCK_MODEL}/converse"
GENERATE = f"/gemini/v1beta/models/{GEMINI_MODEL}:generateContent"
BODIES = {
    # A redacted e-mail in each request, so a placeholder may need restoring: the answer is read.
    CONVERSE: {"messages": [{"role": "user", "content": [{"text": f"write to {EMAIL}"}]}]},
    GENERATE: {"contents": [{"role": "user", "parts": [{"text": f"write to {EMAIL}"}]}]},
}
MALFORMED = [
    (CONVERSE, {"output": "a string", "stopReason": "end_turn"}),
    (CONVERSE, {"output": {"message": ["a", "list"]}}),
    (CONVERSE, {"output": {"message": {"role": "assistant", "content": 3}}}),
    (CONVERSE, {"output": []}),
    (GENERATE, {"candidates": 3}),
    (GENERATE, {"candidates": [{"content": {"role": "model", "parts": 3}}]}),
]


@pytest.fixture(scope="module")
def upstream_module() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        server.aws_credentials = ROUTE_KEY  # verifies interlock's SigV4 signature as in test_bedrock
        yield server


@pytest.fixture(scope="module")
def shared(
    upstream_module: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Running, list[Any]]]:
    routes = {"bedrock": bedrock_route(upstream_module), "gemini": gemini_route(upstream_module)}
    config = {"routes": routes, "shutdown_grace": 2, "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}}}
    with run_interlock(settings_for_test(config, tmp_path_factory.mktemp("malformed_answers"))) as running:
        yield running, collect_calls(running)


@pytest.mark.parametrize(
    ("path", "answer"), MALFORMED, ids=[f"{p.split('/')[1]}-{i}" for i, (p, _) in enumerate(MALFORMED)]
)
def test_a_malformed_answer_is_relayed_and_recorded_never_a_500(
    shared: tuple[Running, list[Any]], upstream_module: ScriptedUpstream, path: str, answer: dict[str, Any]
) -> None:
    running, calls = shared
    before = len(calls)
    upstream_module.script(Script(body=json.dumps(answer).encode()))
    response = httpx.post(running.url + path, json=BODIES[path], headers={"x-goog-api-key": "agent-key"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == answer
    (call,) = finished(calls, before + 1)[before:]
    assert call.outcome == "ok" and call.error_code is None and call.status == 200
    # A restore applies (the e-mail's placeholder), so the answer was to be read: the gap is recorded.
    (gap,) = [d for d in call.decisions if d.stage == "guardrails" and d.action == "skip"]
    assert gap.reason.startswith("response not fully scanned: ")
    assert upstream_module.requests[-1].signature_problem is None or path == GENERATE
    assert EMAIL.encode() not in upstream_module.requests[-1].body  # the request side still ran
