"""The bottom layer: the vocabulary every room speaks, and the few pieces two peers share.

The vocabulary: the `Call` and its value types (`call.py`), its recorded field table (`fields.py`),
the protocol-normalised views of a request and a response and the stream `Event` (`views.py`), and
the guardrail action table policies decide and guardrails apply (`actions.py`). Shared pieces, here
so that no peer imports another for them: the shared state's failure and clients (`state.py`,
`redisstate.py`, `sqlite_state.py`: limits in policies/, the vault in guardrails/), an SQLite
transaction (`sqlite.py`: the store and the state), ending a background task (`tasks.py`).

Nothing here imports another part of interlock: the protocol adapters sit on it, and the proxy,
policies, guardrails, store and exporter above them speak it (`make lint` checks the layering;
docs/architecture.md, "Layers")."""
