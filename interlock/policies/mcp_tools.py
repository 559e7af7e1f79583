"""MCP `tools/list` under policy: tools the policy denies to this agent are removed from the list.

Removed, not renamed: the model never learns of them, so it never tries them. A listed tool is
removed when a `tools/call` of it by this agent would be denied whatever its arguments: the same
rules are evaluated as for the call itself, with the tool's name and no arguments. A denial that
depends on the arguments (a `when` that reads `tool.arguments`: `CompiledRule.reads_arguments`,
worked out when the rule is compiled) keeps the tool listed; the call is then judged when it is made.
Monitor rules only record what they would have removed (`Evaluation.would_deny`), by the same test.

The reply may be JSON or an SSE stream (`protocols.mcp_tools_list.ToolsListRewriter` reads and rewrites both).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from interlock.config import Settings
from interlock.core.call import Call, Decision
from interlock.policies.loader import PolicyRuntime
from interlock.policies.stage import route_hosts
from interlock.policies.subject import Subject
from interlock.protocols.mcp import McpView, is_mcp
from interlock.protocols.mcp_tools_list import ToolsListRewriter


class McpToolFilter(ToolsListRewriter):
    """Removes denied tools from MCP `tools/list` results (after the policy stage, before guardrails)."""

    name = "mcp_tools"

    def __init__(self, runtime: PolicyRuntime, settings: Settings) -> None:
        super().__init__()
        self.runtime = runtime
        self.hosts = route_hosts(settings)

    def applies(self, call: Call) -> bool:
        view = call.view
        return (
            is_mcp(call.protocol)
            and isinstance(view, McpView)
            and view.method == "tools/list"
            and call.reply is None
            and bool(self.runtime.engine.rules)
        )

    def request(self, call: Call) -> None:
        # The reply must be read to filter it: one that cannot be decoded is refused (issue 16).
        if self.applies(call):
            call.readers.append("the MCP tools/list filter")

    def refused(self, call: Call, names: list[str]) -> dict[str, tuple[str, str, bool]]:
        """tool name → (rule, reason, monitor only) for the listed tools a call would be denied."""
        engine = self.runtime.engine
        base = Subject.from_call(call, self.hosts.get(call.route))
        out: dict[str, tuple[str, str, bool]] = {}
        for name in names:
            subject = dataclasses.replace(base, operation="tools/call", tools=(name,), tool=name, tool_arguments={})
            evaluation = engine.evaluate(subject)
            rule = evaluation.denied_by
            if rule is not None:
                if not rule.reads_arguments:
                    out[name] = (rule.name, evaluation.reason, False)
                continue
            for monitor, reason in evaluation.would_deny:
                if not monitor.reads_arguments:  # what enforcing it would remove, no more
                    out[name] = (monitor.name, reason, True)
                    break
        return out

    def filter(self, call: Call, message: dict[str, Any]) -> bool:
        """Remove refused tools from a tools/list response message; True if it changed."""
        refused = self.refused(call, self.adapter.tools_in_list(message))
        enforced = {name for name, (_, _, monitor) in refused.items() if not monitor}
        removed = self.adapter.remove_tools(message, enforced)
        by_rule: dict[tuple[str, bool], list[str]] = {}
        for name, (rule, _, monitor) in refused.items():
            by_rule.setdefault((rule, monitor), []).append(name)
        for (rule, monitor), names in by_rule.items():
            listed = ", ".join(names)
            if monitor:
                call.decide(Decision("policy", "monitor", rule, f"would remove listed tools: {listed}"))
            else:
                call.decide(Decision("policy", "modify", rule, f"removed listed tools: {listed}", {"removed": names}))
        if removed:
            call.meta.setdefault("mcp", {})["removed_tools"] = removed
            summary = call.meta.setdefault("policy", {})
            if summary.get("decision") in (None, "allow"):
                summary["decision"] = "modify"
        return bool(removed)
