"""The Call record, the SQLite store and OpenTelemetry export."""
