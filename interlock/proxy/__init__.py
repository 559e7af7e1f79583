"""The proxy: the ASGI app, the stage pipeline, the upstream client, routing and protocols."""
