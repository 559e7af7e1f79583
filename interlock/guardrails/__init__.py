"""The guardrails: PII (presidio, `pii.py`) and secrets (`secrets.py`) found in requests and responses, and
what becomes of them (`redaction.py`: block, redact, mask, hash), applied by the stage (`stage.py`, with its
analysis and caches in `scanner.py`), on streams too (`guardstream.py`, over `streamrewrite.py`, which replay
shares), and kept out of the record (`scrub.py`). Reversible redaction keeps each session's placeholders in a
vault (`vault.py`: embedded, `vault_sqlite.py`, `vault_redis.py`; values encrypted by `vault_crypto.py`).

What stays in `policies/`: the counters, limits and budgets, and the shared state the vault stands on with
them (`policies/counters.py`'s `StateUnavailable`, `policies/redisstate.py`, `policies/sqlite_state.py`). The
action table a policy rule asks the guardrails for is `core/actions.py` (`GuardrailActions`), the contract
between the two.
"""
