"""What a `when:` condition reads, worked out when it is compiled: only names in the code count, never
words in its strings or comments."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from interlock.config import Settings
from interlock.core.call import Call
from interlock.policies.cel import compile_condition
from interlock.policies.loader import PolicyRuntime
from interlock.policies.mcp_tools import McpToolFilter
from interlock.protocols import ADAPTERS


@pytest.mark.parametrize(
    "source",
    [
        'tool.name == "send_arguments"',
        "tool.name == 'arguments'",
        'tool.name.startsWith("x") // the arguments do not matter here',
        '"""the "arguments" of it""" != tool.name',
        r"r'\' + 'arguments' != tool.name",
        'agent == "tool.arguments"',
        'request.tools.exists(t, t == "arguments")',
    ],
)
def test_the_word_arguments_in_a_string_or_comment_does_not_read_them(source: str) -> None:
    assert not compile_condition(source).reads_arguments


@pytest.mark.parametrize(
    "source",
    [
        'tool.arguments.path.startsWith("/etc")',
        "has(tool.arguments.force)",
        'tool . arguments["to"] == "x"',
        'tool["arguments"].path == "/etc"',  # the variable as a whole: any field
        '[tool].exists(t, t.arguments.x == "y")',
        'tool.name == "x" && size(tool.arguments) > 0',
    ],
)
def test_a_condition_that_reads_the_tool_arguments_says_so(source: str) -> None:
    assert compile_condition(source).reads_arguments


def test_request_fields_ignore_strings_too() -> None:
    condition = compile_condition('request.params.max_tokens > 1 && agent != "request.tools" // request.path')
    assert condition.request_fields == frozenset({"params"})


def test_the_tools_list_filter_judges_rules_by_what_they_read(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            version: 1
            rules:
              - name: no-drops
                match: {tool: "drop_*"}
                when: 'tool.name != "arguments"'
                deny: {}
              - name: mail-inside
                match: {tool: send_email}
                when: '!tool.arguments.to.endsWith("@corp.example")'
                deny: {}
              - name: watch-etc
                match: {tool: read_file}
                when: 'tool.arguments.path.startsWith("/etc")'
                deny: {}
                mode: monitor
              - name: watch-add
                deny: {tools: [add]}
                mode: monitor
            """
        )
    )
    runtime = PolicyRuntime([str(policy)], {"tools": "mcp"})
    runtime.load()
    settings = Settings(routes={"tools": {"protocol": "mcp", "upstream": "http://127.0.0.1:9/mcp"}})
    tools_filter = McpToolFilter(runtime, settings)
    call = Call(id="c1", route="tools", protocol="mcp", method="POST", path="/mcp")
    call.request_body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    call.view = ADAPTERS["mcp"].parse(call)
    names = ["drop_table", "send_email", "read_file", "add"]
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": n} for n in names]}}
    assert tools_filter.filter(call, message)
    # "arguments" only in a string: denied whatever the arguments, so removed. Reading them: listed,
    # and judged when called; a monitor rule that reads them would not remove the tool either.
    assert [t["name"] for t in message["result"]["tools"]] == ["send_email", "read_file", "add"]
    assert [(d.action, d.rule, d.reason) for d in call.decisions] == [
        ("modify", "no-drops", "removed listed tools: drop_table"),
        ("monitor", "watch-add", "would remove listed tools: add"),
    ]
