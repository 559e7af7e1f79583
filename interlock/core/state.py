"""The one failure of the shared state, whichever engine holds it (Redis, the store's SQLite file):
here, at the bottom, because the policy limits and budgets (`policies/`) and the guardrails' vault
(`guardrails/`) both stand on it, and neither room imports the other."""

from __future__ import annotations


class StateUnavailable(Exception):
    """The shared state (Redis) did not answer within its bound: nothing was read or changed (or,
    for a timeout, it is unknown whether the change landed)."""


__all__ = ["StateUnavailable"]
