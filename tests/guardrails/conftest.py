"""The guardrails' tests share the policy tests' helpers: a rule may ask for a guardrail
(`test_guardrails_sdk.py`), and the SDK clients are the same."""

from tests.policies.conftest import write_policy  # noqa: F401 - a fixture, registered by being imported here
