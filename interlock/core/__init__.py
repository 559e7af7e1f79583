"""The bottom vocabulary every room shares: the `Call` (`call.py`), its recorded field table
(`fields.py`), and the protocol-normalised views of a request and a response (`views.py`).

Nothing here imports another part of interlock: the protocol adapters sit on it, and the proxy,
policies, guardrails, store and exporter above them speak it (`make lint` checks the layering)."""
