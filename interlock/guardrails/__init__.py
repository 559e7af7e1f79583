"""The guardrails: PII (presidio, `pii.py`) and secrets (`secrets.py`) found in requests and responses, and
what becomes of them (`redaction.py`: block, redact, mask, hash), applied by the stage (`stage.py`, with its
analysis and caches in `scanner.py`), on streams too (`guardstream.py`, over `streamrewrite.py`, which replay
shares), and kept out of the record (`scrub.py`). Reversible redaction keeps each session's placeholders in a
vault (`vault.py`: the interface and the embedded one; `vault_sqlite.py`, `vault_redis.py`; values
encrypted by `vault_crypto.py`; `vault_open.py` picks one).

What stays in `policies/`: the counters, limits and budgets. What both rooms stand on sits below them, in
`core/` (neither imports the other): the action table a policy rule asks the guardrails for
(`core/actions.py`, `GuardrailActions`), and the shared state's engines and their one failure
(`core/redisstate.py`, `core/sqlite_state.py`, `core/state.py`'s `StateUnavailable`).
"""
