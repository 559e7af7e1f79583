"""Azure OpenAI through interlock with the real `openai.AzureOpenAI` client (issue 20): the deployment
and v1 paths, `api-key` and Entra ID tokens, deployment → model for policy and pricing, streams,
tools, a denied tool, PII restored, usage and cost, a budget, replay and the call page."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from interlock.config import load_settings
from interlock.otel.attributes import describe_call
from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, replay_server, run_interlock, settings_for_test
from interlock.yamlsource import SourceError
from tests.conftest import passes_policy_test
from tests.sdk_errors import protocol_error

API_VERSION = "2024-10-21"
EMAIL = "jane.roe@acme-corp.io"
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
POLICY = """
rules:
  - name: no-deletes
    deny: {tools: [delete_file]}
  - name: thrifty
    match: {agent: thrifty}
    limits: {budget_usd_per_day: 0.00005}
"""


def routes(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {
        # The route holds the resource key; agents hold placeholders or Entra tokens.
        "azure": {
            "protocol": "azure_openai",
            "upstream": upstream.url,
            "api_key": "azure-resource-key",
            "deployments": {
                "prod-chat": "gpt-4o",
                "prod-embed": "text-embedding-3-small",
                "mini-east": "gpt-4o-mini",
                "mini-west": "gpt-4o-mini",
            },
            # A model alias on Azure names deployments: failing over rewrites the deployment in the path.
            "models": {"gpt-4o-mini": [{"model": "mini-east"}, {"model": "mini-west"}]},
            "retry": {"same_target": 1},
        },
        # No key of its own: the agent's credential goes upstream as it came.
        "azure-passthrough": {"protocol": "azure_openai", "upstream": upstream.url},
    }


@pytest.fixture(scope="module")
def azure(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One interlock for the module: guardrails redact e-mail addresses, a policy denies a tool and
    gives the agent `thrifty` a budget of a fraction of a cent."""
    tmp = tmp_path_factory.mktemp("azure")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "policy.yaml").write_text(textwrap.dedent(POLICY))
    data = {
        "routes": routes(upstream_server),
        "shutdown_grace": 2,
        "policies": [str(tmp / "policies")],
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}},
        "virtual_keys": {"vk-azure-keyed": {"agent": "keyed"}},
    }
    with run_interlock(settings_for_test(data, tmp)) as running:
        yield running


def client(
    running: Running, session: str, route: str = "azure", agent: str = "azure-bot", **kwargs: Any
) -> openai.AzureOpenAI:
    options: dict[str, Any] = {"api_key": "placeholder"} if "azure_ad_token" not in kwargs else {}
    return openai.AzureOpenAI(
        azure_endpoint=f"{running.url}/{route}",
        api_version=API_VERSION,
        max_retries=0,
        default_headers={"X-Interlock-Agent": agent, "X-Interlock-Session": session},
        **options,
        **kwargs,
    )


def test_chat_through_the_deployment_path_with_the_routes_key(azure: Running, upstream: ScriptedUpstream) -> None:
    with client(azure, "deployment") as sdk:
        completion = sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    assert completion.model_extra is not None and completion.model_extra["prompt_filter_results"]  # Azure's, relayed
    sent = upstream.requests[-1]
    assert sent.path == "/openai/deployments/prod-chat/chat/completions"
    assert f"api-version={API_VERSION}" in sent.query
    assert sent.headers["api-key"] == "azure-resource-key"  # the route's key replaced the agent's
    assert "authorization" not in sent.headers
    [call] = azure.recorded_calls(1, session="deployment")
    # The deployment is the model it serves for policy and pricing; the name asked for is kept.
    assert (call.model, call.meta["deployment"], call.protocol) == ("gpt-4o", "prod-chat", "azure_openai")
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    assert call.cost_usd is not None and call.cost_usd > 0


def test_a_stream_is_relayed_and_recorded_as_the_answer_azure_would_give(
    azure: Running, upstream: ScriptedUpstream
) -> None:
    upstream.script(Script(text="streaming on azure", chunk_size=3))
    with client(azure, "stream") as sdk:
        stream = sdk.chat.completions.create(
            model="prod-chat",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    # The opening chunk holds only the prompt's filter results (no choices), as Azure sends it.
    assert chunks[0].choices == [] and chunks[0].id == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streaming on azure"
    [call] = azure.recorded_calls(1, session="stream")
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    call.view = ADAPTERS["azure_openai"].parse(call)  # what the exporter has: the live call's view
    attributes = describe_call(call).attributes
    assert attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.response.id"] == "chatcmpl-scripted"  # not the opening chunk's empty id
    detail = httpx.get(f"{azure.admin_url}/api/calls/{call.id}").json()
    message = detail["response_message"]
    assert message["id"] == "chatcmpl-scripted" and message["model"] == "prod-chat"
    assert message["choices"][0]["message"]["content"] == "streaming on azure"
    assert message["prompt_filter_results"][0]["prompt_index"] == 0


def test_an_entra_id_token_reaches_azure_as_a_bearer_token(azure: Running, upstream: ScriptedUpstream) -> None:
    with client(azure, "entra", "azure-passthrough", azure_ad_token="entra-token-123") as sdk:
        completion = sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == "Bearer entra-token-123"
    assert "api-key" not in sent.headers
    with client(azure, "entra", "azure-passthrough") as sdk:
        sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    assert upstream.requests[-1].headers["api-key"] == "placeholder"  # the agent's own key, as it came
    newest = azure.recorded_calls(2, session="entra")[0]
    stored = httpx.get(f"{azure.admin_url}/api/calls/{newest.id}").text
    assert "entra-token-123" not in stored and "placeholder" not in stored


def test_the_route_key_replaces_an_entra_token(azure: Running, upstream: ScriptedUpstream) -> None:
    with client(azure, "entra-replaced", azure_ad_token="entra-token-123") as sdk:
        sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    sent = upstream.requests[-1]
    assert sent.headers["api-key"] == "azure-resource-key" and "authorization" not in sent.headers


def test_the_v1_api_path(azure: Running, upstream: ScriptedUpstream) -> None:
    # The v1 API's base URL is the resource's plus /openai/v1: here the route's plus /openai/v1
    # (no /v1/v1: the route's upstream is the resource's endpoint).
    session = {"X-Interlock-Session": "v1"}
    with openai.OpenAI(
        base_url=f"{azure.url}/azure/openai/v1", api_key="placeholder", max_retries=0, default_headers=session
    ) as sdk:
        completion = sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "v1"}])
        response = sdk.responses.create(model="prod-chat", input="v1 responses")
        embedding = sdk.embeddings.create(model="prod-embed", input="vector")
    assert completion.choices[0].message.content == "echo: v1"
    assert response.output_text == "echo: v1 responses"
    assert len(embedding.data) == 1
    paths = [r.path for r in upstream.requests[-3:]]
    assert paths == ["/openai/v1/chat/completions", "/openai/v1/responses", "/openai/v1/embeddings"]
    assert all(r.headers["api-key"] == "azure-resource-key" for r in upstream.requests[-3:])
    calls = azure.recorded_calls(3, session="v1")
    assert sorted(c.model for c in calls) == ["gpt-4o", "gpt-4o", "text-embedding-3-small"]


def test_a_path_outside_azures_is_refused_in_its_shape(azure: Running, upstream: ScriptedUpstream) -> None:
    reply = httpx.post(f"{azure.url}/azure/chat/completions", json={"model": "m", "messages": []})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert upstream.requests == []


def test_tool_calls_round_trip_streamed_and_not(azure: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(
        Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]),
        Script(tool_calls=[ToolUse("get_weather", {"city": "Lyon"})]),
    )
    with client(azure, "tools") as sdk:
        first = sdk.chat.completions.create(
            model="prod-chat",
            messages=[{"role": "user", "content": "weather?"}],
            tools=WEATHER,  # type: ignore[arg-type]
        )
        stream = sdk.chat.completions.create(
            model="prod-chat",
            messages=[{"role": "user", "content": "weather?"}],
            tools=WEATHER,  # type: ignore[arg-type]
            stream=True,
        )
        arguments = "".join(
            c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index, union-attr]
            for c in stream
            if c.choices and c.choices[0].delta.tool_calls
        )
    assert first.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index, union-attr]
    assert json.loads(arguments) == {"city": "Lyon"}


def test_a_denied_tool_call_is_refused_streamed_and_not(azure: Running, upstream: ScriptedUpstream) -> None:
    delete = Script(tool_calls=[ToolUse("delete_file", {"path": "/"})])
    upstream.script(delete, delete)
    tools = [{"type": "function", "function": {"name": "delete_file", "parameters": {"type": "object"}}}]
    with client(azure, "denied") as sdk:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            # Offered, it is stripped from the request; called anyway, the answer is refused.
            sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "rm"}], tools=tools)  # type: ignore[arg-type]
        assert protocol_error(denied.value)["code"] == "policy_denied"
        assert "tools" not in upstream.requests[-1].json()
        with pytest.raises(openai.APIError) as broken:
            for _ in sdk.chat.completions.create(
                model="prod-chat",
                messages=[{"role": "user", "content": "rm"}],
                stream=True,
            ):
                pass
    assert "delete_file" in str(broken.value)


def test_an_email_is_redacted_upstream_and_restored_for_the_agent(azure: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(), Script(chunk_size=3))
    with client(azure, "pii") as sdk:
        completion = sdk.chat.completions.create(
            model="prod-chat", messages=[{"role": "user", "content": f"write to {EMAIL}"}]
        )
        stream = sdk.chat.completions.create(
            model="prod-chat", messages=[{"role": "user", "content": f"mail {EMAIL}"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert completion.choices[0].message.content == f"echo: write to {EMAIL}"
    assert streamed == f"echo: mail {EMAIL}"
    assert [r.json()["messages"][0]["content"] for r in upstream.requests[-2:]] == [
        "write to <EMAIL_ADDRESS_1>",
        "mail <EMAIL_ADDRESS_1>",
    ]
    assert all(EMAIL.encode() not in r.body for r in upstream.requests)


def test_a_budget_refuses_once_the_deployments_model_has_cost_it(azure: Running, upstream: ScriptedUpstream) -> None:
    # gpt-4o at the catalogue's price: 11 input and 7 output tokens cost ~$0.0001, over the budget.
    with client(azure, "budget", agent="thrifty") as sdk:
        sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "one"}])
        azure.recorded_calls(1, session="budget")
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "two"}])
    assert protocol_error(refused.value)["code"] == "budget_exceeded"
    assert len([r for r in upstream.requests if r.json()["messages"][0]["content"] == "two"]) == 0


def test_the_call_page_shows_the_conversation(azure: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="Sunny in Paris."))
    with client(azure, "page") as sdk:
        stream = sdk.chat.completions.create(
            model="prod-chat", messages=[{"role": "user", "content": "Weather in Paris?"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Sunny in Paris."
    [call] = azure.recorded_calls(1, session="page")
    page = httpx.get(f"{azure.admin_url}/call/{call.id}")
    assert page.status_code == 200
    assert "Weather in Paris?" in page.text and "Sunny in Paris." in page.text


def test_a_session_replays_offline_through_azure_paths(
    azure: Running, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    upstream.script(Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]), Script(text="Paris: sunny."))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    def agent(sdk: openai.AzureOpenAI) -> str | None:
        history = list(messages)
        first = sdk.chat.completions.create(model="prod-chat", messages=history, tools=WEATHER)  # type: ignore[arg-type]
        tool_call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        history += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny"},
        ]
        second = sdk.chat.completions.create(model="prod-chat", messages=history, tools=WEATHER, stream=True)  # type: ignore[arg-type]
        return "".join(c.choices[0].delta.content or "" for c in second if c.choices)

    with client(azure, "replayed-session") as sdk:
        answer = agent(sdk)
    assert answer == "Paris: sunny."
    azure.recorded_calls(2, session="replayed-session")
    bundle = tmp_path / "azure.db"
    assert azure.runtime.store.export(bundle, session="replayed-session") == 2
    served = len(upstream.requests)
    with replay_server(bundle) as replay:
        sdk = openai.AzureOpenAI(
            azure_endpoint=replay.base_url("azure"),
            api_version=API_VERSION,
            api_key="placeholder",
            max_retries=0,
            default_headers={"X-Interlock-Session": "replayed-session"},
        )
        with sdk:
            assert agent(sdk) == answer
    replay.assert_no_divergence(all_used=True)
    assert len(upstream.requests) == served  # offline: nothing reached the provider


def test_a_model_alias_fails_over_to_another_deployment(azure: Running, upstream: ScriptedUpstream) -> None:
    upstream.set_model("mini-east", Script(status=503))
    with client(azure, "failover") as sdk:
        completion = sdk.chat.completions.create(model="mini-east", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    paths = [r.path for r in upstream.requests]
    assert paths == ["/openai/deployments/mini-east/chat/completions", "/openai/deployments/mini-west/chat/completions"]
    assert upstream.requests[-1].json()["model"] == "mini-west"
    [call] = azure.recorded_calls(1, session="failover")
    assert call.model == "gpt-4o-mini" and [a.status for a in call.attempts] == [503, 200]
    assert call.cost_usd is not None and call.cost_usd > 0  # priced as the model mini-west serves


@pytest.mark.parametrize("path", ["/openai", "/openai/v1", "/openai/v1/"])
def test_an_upstream_ending_in_openai_is_refused_at_its_line(tmp_path: Path, path: str) -> None:
    # Agents' paths carry /openai/...: such an upstream would receive /openai/v1/openai/v1/...
    config = tmp_path / "interlock.yaml"
    config.write_text(
        f"routes:\n  azure:\n    protocol: azure_openai\n    upstream: https://r.openai.azure.com{path}\n"
    )
    with pytest.raises(SourceError) as caught:
        load_settings(config)
    assert (caught.value.line, caught.value.col) == (4, 5)  # the upstream's line
    config.write_text(
        "routes:\n  azure:\n    protocol: azure_openai\n    upstream: https://r.openai.azure.com\n"
        "    stream_rescue: true\n"
    )
    with pytest.raises(SourceError):  # not continued elsewhere: refused, not silently never rescued
        load_settings(config)
    gateway = "routes:\n  azure: {protocol: azure_openai, upstream: https://gw.azure-api.net/team-a}\n"
    config.write_text(gateway)
    assert load_settings(config).routes["azure"].upstreams[0].url == "https://gw.azure-api.net/team-a"


def test_policy_test_cases_see_the_model_a_deployment_serves(tmp_path: Path) -> None:
    config = (
        "routes:\n  azure:\n    protocol: azure_openai\n    upstream: https://r.openai.azure.com\n"
        "    deployments: {prod-chat: gpt-4o}\n"
    )
    rules = "rules:\n  - name: no-4o\n    deny: {models: [gpt-4o]}\n"
    cases = """
cases:
  - name: the deployment path names gpt-4o's deployment
    request: {route: azure, path: /openai/deployments/prod-chat/chat/completions}
    expect: {decision: deny, rule: no-4o}
  - name: the v1 API names it in the body
    request: {route: azure, model: prod-chat}
    expect: {decision: deny, rule: no-4o}
  - name: another deployment passes
    request: {route: azure, path: /openai/deployments/other/chat/completions}
    expect: {decision: allow}
"""
    passes_policy_test(tmp_path, config, rules, cases)


def test_whatif_judges_a_recorded_call_as_the_model_its_deployment_serves(
    azure: Running, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    from interlock.policies.loader import load_policies
    from interlock.policies.whatif import whatif

    with client(azure, "whatif") as sdk:
        sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    [call] = azure.recorded_calls(1, session="whatif")
    (tmp_path / "p.yaml").write_text("rules:\n  - name: no-4o\n    deny: {models: [gpt-4o]}\n")
    report = whatif(load_policies([str(tmp_path / "p.yaml")]), [call])
    assert [(c.before, c.after, c.rule) for c in report.changes] == [("allow", "deny", "no-4o")]


def test_a_virtual_key_in_api_key_names_the_agent_and_never_leaves(azure: Running, upstream: ScriptedUpstream) -> None:
    for route in ("azure", "azure-passthrough"):
        sdk = openai.AzureOpenAI(
            azure_endpoint=f"{azure.url}/{route}",
            api_version=API_VERSION,
            api_key="vk-azure-keyed",
            max_retries=0,
            default_headers={"X-Interlock-Session": f"keyed-{route}"},
        )
        with sdk:
            if route == "azure":
                sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
            else:  # no key of its own, and the virtual key is not sent: Azure refuses the call
                with pytest.raises(openai.AuthenticationError):
                    sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
        assert all("vk-azure-keyed" not in value for value in upstream.requests[-1].headers.values())
        [call] = azure.recorded_calls(1, session=f"keyed-{route}")
        assert call.agent == "keyed"
    assert upstream.requests[0].headers["api-key"] == "azure-resource-key"
    assert "api-key" not in upstream.requests[1].headers and "authorization" not in upstream.requests[1].headers


def test_azures_own_refusals_reach_the_agent_as_azure_sent_them(azure: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(error="content_filter"))
    with client(azure, "filtered") as sdk:
        with pytest.raises(openai.BadRequestError) as filtered:
            sdk.chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    assert protocol_error(filtered.value)["code"] == "content_filter"
    # The deployment API without api-version: Azure's 404, relayed (interlock does not invent a version).
    body = {"messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{azure.url}/azure/openai/deployments/prod-chat/chat/completions", json=body)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "404"


def test_responses_and_embeddings_through_azure_openai(azure: Running, upstream: ScriptedUpstream) -> None:
    # AzureOpenAI sends the Responses API to /openai/responses (the deployment in the body) and
    # embeddings to the deployment path.
    upstream.script(Script(), Script(text="streamed response", chunk_size=4), Script())
    with client(azure, "responses") as sdk:
        response = sdk.responses.create(model="prod-chat", input="hello")
        with sdk.responses.stream(model="prod-chat", input="again") as stream:
            streamed = stream.get_final_response()
        embedding = sdk.embeddings.create(model="prod-embed", input="vector")
    assert response.output_text == "echo: hello"
    assert streamed.output_text == "streamed response"
    assert len(embedding.data) == 1
    assert [r.path for r in upstream.requests] == [
        "/openai/responses",
        "/openai/responses",
        "/openai/deployments/prod-embed/embeddings",
    ]
    calls = azure.recorded_calls(3, session="responses")
    assert [c.model for c in calls] == ["text-embedding-3-small", "gpt-4o", "gpt-4o"]
    assert [c.input_tokens for c in calls] == [3, 11, 11]  # usage read from each, the stream's too
