"""The contract between the policy engine and the guardrails stage: which action for which finding.

The policy stage computes one `GuardrailActions` per call from the rules that match it and puts it
on `call.guardrails`; the guardrails stage only reads it. When no policy sets anything, the
guardrails stage uses the defaults from the `guardrails:` section of interlock.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["block", "redact", "mask", "hash", "log"]
ACTIONS: tuple[Action, ...] = ("block", "redact", "mask", "hash", "log")
#: How strong each action is, when several rules name the same entity: the strongest wins.
STRENGTH: dict[str, int] = {"log": 0, "hash": 1, "mask": 2, "redact": 3, "block": 4}


@dataclass(frozen=True, slots=True)
class GuardrailActions:
    """Entity type → action, separately for requests and responses. `"*"` is the default entry;
    secrets are the entity type `SECRET`."""

    request: Mapping[str, Action] = field(default_factory=dict)
    response: Mapping[str, Action] = field(default_factory=dict)
    #: What happens when the analyzer itself fails: deny the call (fail closed) or let it through.
    on_error: Literal["deny", "allow"] = "deny"
    #: Names of the rules that contributed, for decisions and the UI.
    rules: tuple[str, ...] = ()

    def action_for(self, entity: str, direction: Literal["request", "response"]) -> Action | None:
        table = self.request if direction == "request" else self.response
        return table.get(entity) or table.get("*")

    def merge(self, other: GuardrailActions) -> GuardrailActions:
        """Combine two sets; for each entity the strongest action wins."""

        def combine(a: Mapping[str, Action], b: Mapping[str, Action]) -> dict[str, Action]:
            out = dict(a)
            for entity, action in b.items():
                if entity not in out or STRENGTH[action] > STRENGTH[out[entity]]:
                    out[entity] = action
            return out

        on_error: Literal["deny", "allow"] = "deny" if "deny" in (self.on_error, other.on_error) else "allow"
        return GuardrailActions(
            combine(self.request, other.request),
            combine(self.response, other.response),
            on_error,
            self.rules + tuple(r for r in other.rules if r not in self.rules),
        )

    @property
    def empty(self) -> bool:
        return not self.request and not self.response
