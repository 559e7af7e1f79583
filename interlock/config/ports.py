"""The two ports (`listen:`, `admin:`) and the bounds on what may reach them (`server:`)."""

from __future__ import annotations

from pydantic import Field

from interlock.config.model import Model


class Listen(Model):
    host: str = "127.0.0.1"
    port: int = Field(4141, ge=0, le=65535)
    #: Host names (without port) the proxy answers besides localhost, IP addresses and its own bind
    #: address (docs/security.md: DNS rebinding). `*` answers any; `.example.com` a domain and its subdomains.
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins (`https://app.example`) allowed to call the proxy; any other request with an
    #: `Origin` or `Sec-Fetch-Site` header (a browser's) is refused. `*` allows every origin.
    cors: tuple[str, ...] = ()


class Admin(Model):
    host: str = "127.0.0.1"
    port: int = Field(4142, ge=0, le=65535)
    #: When set, every admin page and API call needs `Authorization: Bearer <token>` (or `?token=`).
    token: str | None = None
    #: Host names the admin port answers besides localhost and loopback addresses (and, with a token,
    #: any IP address and the bind address); `*` answers any (docs/security.md).
    allowed_hosts: tuple[str, ...] = ()


class HttpServer(Model):
    """Bounds on what an agent (or anything reaching the ports) may hold open: both ports (docs/routing.md)."""

    #: Seconds for a request's head (request line and headers) to arrive, from the connection's
    #: start or the request's first byte; past it: 408 and the connection closed (slowloris).
    header_timeout: float = Field(10.0, gt=0)
    #: Seconds to read a whole request body once its head arrived (the body-read deadline); past
    #: it: 408 `body_timeout` (a body trickled, or shorter than its Content-Length).
    body_timeout: float = Field(60.0, gt=0)
    #: Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive).
    keep_alive: float = Field(5.0, gt=0)
    #: Most bytes of a request head; past it: 431 and the connection closed.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
