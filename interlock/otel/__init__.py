"""The OpenTelemetry exporter: a call's spans and metrics (`exporter.py` builds the stage), sent from a
second process (`process.py`) or in-process. A peer of `tracing/` (the store and the recorder): both
consume the sealed Call. Nothing is imported here: without an endpoint not even the SDK is loaded
(docs/otel.md)."""
