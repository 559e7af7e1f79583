"""The admin port: health, the JSON API and the web UI."""
