"""Plain HTTP tool endpoints: relayed as they are; the body is not interpreted."""

from __future__ import annotations

from interlock.protocols.base import Adapter


class HttpAdapter(Adapter):
    name = "http"
