"""The policy file format: pydantic models, so errors name `file:line:col` and editors get a JSON Schema.

```yaml
version: 1
rules:
  - name: support-uses-small-models
    match: {agent: "support-*", route: openai}
    allow: {models: [gpt-4o-mini, gpt-4.1-mini]}
```

The meaning of each field (how rules combine, defaults) is in docs/policies.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from interlock.core.actions import Action


def _as_patterns(value: Any) -> Any:
    # `agent: "support-*"` and `agent: [a, b]` both mean a list of globs.
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a glob or a list of globs (strings), e.g. support-* or [gpt-4o, gpt-4o-mini]")
    return value


#: One glob or a list of globs; always a tuple once validated.
Patterns = Annotated[
    tuple[str, ...],
    BeforeValidator(_as_patterns),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Model):
    """Which calls a rule applies to. Every given field must match (AND); within a field, any glob (OR).
    A field that is not given matches everything."""

    agent: Patterns | None = Field(None, description="Agent names (globs), e.g. `support-*`.")
    session: Patterns | None = Field(None, description="Session ids (globs).")
    route: Patterns | None = Field(None, description="Route names from interlock.yaml (globs).")
    model: Patterns | None = Field(None, description="Requested model names (globs).")
    tool: Patterns | None = Field(None, description="The tool an MCP `tools/call` calls (globs).")
    path: Patterns | None = Field(None, description="Upstream path after the route segment, e.g. `/v1/files/*`.")
    method: Patterns | None = Field(None, description="HTTP methods, e.g. [POST, DELETE].")


class Effect(_Model):
    """Lists for `allow` (only these) and `deny` (never these). An empty `deny: {}` denies the call."""

    models: Patterns | None = Field(None, description="Model names (globs).")
    tools: Patterns | None = Field(None, description="Tool names (globs): offered, called by the model, or MCP.")
    methods: Patterns | None = Field(None, description="HTTP methods (on any route; mostly `http` routes).")
    paths: Patterns | None = Field(None, description="Upstream paths (globs).")
    hosts: Patterns | None = Field(None, description="Egress hosts: the host of the route's upstream (globs).")

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


_NOT_LIMITS = frozenset({"per", "unpriced"})


class Limits(_Model):
    """Rate limits and budgets, counted separately for each agent (or session) the rule matches."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    concurrent: int | None = Field(None, ge=1, description="Calls in flight at once.")
    budget_usd_per_day: float | None = Field(None, gt=0, description="USD a day (priced as each call is recorded).")
    # Run caps: a session's whole life, not a window (issue 22); only with `per: session`.
    max_calls: int | None = Field(None, ge=1, description="Calls in the session's whole life (per: session).")
    max_tokens: int | None = Field(None, ge=1, description="Tokens in the session's whole life (per: session).")
    max_usd: float | None = Field(None, gt=0, description="USD in the session's whole life (per: session).")
    max_duration: float | None = Field(
        None, gt=0, description="Seconds from the session's first call on; after it, calls are refused (per: session)."
    )
    unpriced: Literal["deny", "warn", "zero"] = Field(
        "deny",
        description="With budget_usd_per_day or max_usd, a call to a model nobody prices (neither the price "
        "catalogue nor `prices:`): refused (deny), counted as $0 with a warning on the call (warn), or counted "
        "as $0 (zero).",
    )
    per: Literal["agent", "session"] = "agent"

    @property
    def counts_money(self) -> bool:
        return self.budget_usd_per_day is not None or self.max_usd is not None

    @property
    def caps(self) -> bool:
        """Whether it has run caps (a session's whole life)."""
        return any(v is not None for v in (self.max_calls, self.max_tokens, self.max_usd, self.max_duration))

    @model_validator(mode="after")
    def _caps_per_session(self) -> Limits:
        if self.caps and self.per != "session":
            raise ValueError(
                "max_calls, max_tokens, max_usd and max_duration cap a session's run: they need per: session"
            )
        return self

    @model_validator(mode="after")
    def _something(self) -> Limits:
        if all(getattr(self, k) is None for k in type(self).model_fields if k not in _NOT_LIMITS):
            raise ValueError(
                "limits need at least one of " + ", ".join(k for k in type(self).model_fields if k not in _NOT_LIMITS)
            )
        return self


SecretsAction = Literal["block", "redact", "log"]


class Loop(_Model):
    """Loop detection within a session (docs/policies.md, "Loops"). Each count is a threshold: the
    Nth sighting is a loop; `null` turns that check off."""

    tool_calls: int | None = Field(
        5, ge=2, description="The same tool call (name + canonical arguments) seen this many times in the window."
    )
    requests: int | None = Field(
        4, ge=2, description="The same request (the new turn: messages after the last answer) this many times."
    )
    tool_errors: int | None = Field(3, ge=2, description="The same tool error this many times in a row.")
    window: int = Field(
        50, ge=2, le=1000, description="How many of a session's latest tool calls (and requests) are compared."
    )
    action: Literal["monitor", "deny", "stop_session"] = Field(
        "deny", description="What a loop does: record it (monitor), refuse the call (deny), or stop the session."
    )

    @model_validator(mode="after")
    def _something(self) -> Loop:
        if self.tool_calls is None and self.requests is None and self.tool_errors is None:
            raise ValueError("loop needs at least one of tool_calls, requests, tool_errors")
        return self


class Rule(_Model):
    name: str = Field(min_length=1, description="Unique; shown in denials, decisions and the admin API.")
    description: str | None = None
    match: Match = Match()
    when: str | None = Field(None, description="A CEL condition; see docs/policies.md for the variables.")
    allow: Effect | None = None
    deny: Effect | None = None
    offered_tools: Literal["strip", "deny"] = Field(
        "strip", description="What to do with a denied tool offered in a request: strip it, or deny the call."
    )
    limits: Limits | None = None
    set: dict[str, Any] | None = Field(
        None, description="Request parameters: numbers are upper bounds (clamped, or set when absent); others set."
    )
    mode: Literal["enforce", "monitor"] = "enforce"
    message: str | None = Field(None, description="Shown to the agent when this rule denies a call.")
    on_error: Literal["deny", "allow"] = Field("deny", description="When `when` fails at run time.")
    pii: dict[str, Action] | None = Field(None, description="Entity type → action, for requests.")
    pii_response: dict[str, Action] | None = Field(None, description="Entity type → action, for responses.")
    secrets: SecretsAction | None = Field(None, description="Action for secrets, in requests and responses.")
    loop: Loop | None = Field(None, description="Loop detection within a session; `loop: {}` takes the defaults.")

    @field_validator("set")
    @classmethod
    def _set_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in value or {}:
            if key in ("model", "messages", "input", "tools", "stream"):
                raise ValueError(f"`set` cannot change {key!r}; use allow/deny for models and tools")
        return value

    @property
    def effects(self) -> list[str]:
        """The effects this rule has (for linting and the admin API)."""
        found = []
        if self.deny is not None:
            found.append("deny")
        if self.allow is not None and not self.allow.empty:
            found.append("allow")
        for name in ("limits", "set", "pii", "pii_response", "secrets", "loop"):
            if getattr(self, name):
                found.append(name)
        return found


class PolicyFile(_Model):
    version: Literal[1] = 1
    rules: tuple[Rule, ...] = ()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, for editors' YAML autocompletion."""
    schema = PolicyFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "interlock policy file"
    return schema


__all__ = ["Effect", "Limits", "Loop", "Match", "PolicyFile", "Rule", "json_schema"]
