"""Checks at the proxy's edge, before a call reaches any stage (docs/security.md).

Who may talk to the proxy at all (no web page: `Origin`, `Sec-Fetch-Site`; no foreign `Host`: DNS
rebinding), which paths may be sent (no dot segments, however encoded), which bodies a JSON route
takes (none a browser can send without a CORS preflight), and what of the query string may be kept
(credential parameters masked). The admin port uses the same `HostAllowList`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

import yarl

from interlock.config import Settings, public_query
from interlock.core.call import Headers

#: Host names that always mean this machine.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def host_name(value: str) -> str:
    """The host of a `Host` header: port and IPv6 brackets removed, lower case, no trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:4141
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostAllowList:
    """Which `Host` headers a port answers. A browser tricked by DNS rebinding sends the attacker's
    host name, never an IP address, so the default answers localhost, loopback addresses and (unless
    `loopback_only`) any IP address and the bind address; other names must be listed (`*`: any;
    `.example.com`: that domain and its subdomains). A request without `Host` (HTTP/1.0) is no
    browser's and is answered."""

    __slots__ = ("any", "names", "suffixes", "loopback_only", "_memo")

    def __init__(self, bind_host: str, allowed: Iterable[str], *, loopback_only: bool = False) -> None:
        listed = [host_name(h) if h != "*" else "*" for h in allowed]
        self.any = "*" in listed
        self.suffixes = tuple(h for h in listed if h.startswith("."))
        names = {h for h in listed if h != "*" and not h.startswith(".")}
        bind = host_name(bind_host)
        if not loopback_only and bind not in _WILDCARD_BINDS:
            names.add(bind)
        self.names = frozenset(names)
        self.loopback_only = loopback_only
        self._memo: dict[str, bool] = {}

    def allows(self, host: str | None) -> bool:
        if host is None or self.any:
            return True
        found = self._memo.get(host)
        if found is None:
            found = self._judge(host_name(host))
            if len(self._memo) < 1024:  # bounded: hostile clients may send many names
                self._memo[host] = found
        return found

    def _judge(self, name: str) -> bool:
        if name in _LOOPBACK_NAMES or name in self.names:
            return True
        if any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes):
            return True
        address = _ip(name)
        if address is None:
            return False
        return address.is_loopback or not self.loopback_only


def from_browser(origin: str | None, site: str | None) -> bool:
    """Whether a web page made this request. Browsers mark every request a page makes: `Origin` on
    cross-origin requests and on every POST, `Sec-Fetch-Site` on all of them (`none`: the user
    typed the URL, which no page can forge)."""
    return origin is not None or (site is not None and site.strip().lower() != "none")


#: Bodies a page can POST cross-site without a CORS preflight (the Fetch standard's safelist).
_SIMPLE_BODY_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})

Refusal = tuple[int, str, str]  # status, code, message


class ProxyEdge:
    """The proxy port's checks, in one pass over the request headers."""

    __slots__ = ("hosts", "cors", "secret_params")

    def __init__(self, settings: Settings) -> None:
        self.hosts = HostAllowList(settings.listen.host, settings.listen.allowed_hosts)
        self.cors = frozenset(o.strip().rstrip("/") for o in settings.listen.cors)
        self.secret_params = frozenset(n.lower() for n in settings.secret_query_params)

    def check(self, headers: Headers, path: bytes | None, json_route: bool) -> tuple[Refusal | None, str | None]:
        """(why the request is refused or None, the CORS origin to answer or None). `path` is the
        upstream path (None: no route, not checked)."""
        host = origin = site = content_type = None
        for key, value in headers:
            if key == "host":
                host = value
            elif key == "origin":
                origin = value.strip()
            elif key == "sec-fetch-site":
                site = value
            elif key == "content-type":
                content_type = value
        if not self.hosts.allows(host):
            message = f"host {host!r} is not one this proxy answers (DNS rebinding?); see listen.allowed_hosts"
            return (403, "host_refused", message), None
        allowed_origin = None
        if from_browser(origin, site):
            if origin is None or not ("*" in self.cors or origin in self.cors):
                who = f"origin {origin!r}" if origin is not None else "a web page"
                message = f"requests from {who} are refused: the proxy answers agents, not browsers (see listen.cors)"
                return (403, "origin_refused", message), None
            allowed_origin = origin
        if path is not None:
            problem = path_refusal(path)
            if problem is not None:
                return (400, "invalid_path", problem), allowed_origin
        if json_route and content_type is not None:
            # A JSON API never takes what a page can POST without a preflight; no Content-Type at
            # all is taken (raw HTTP clients).
            media = content_type.partition(";")[0].strip().lower()
            if media in _SIMPLE_BODY_TYPES:
                message = f"this route takes JSON, not {media} (send Content-Type: application/json)"
                return (415, "unsupported_media_type", message), allowed_origin
        return None, allowed_origin

    def public_query(self, query: str) -> str:
        return public_query(query, self.secret_params)


def upstream_path(rest: bytes) -> str:
    """The upstream path (after the route segment) exactly as the HTTP client will send it, so that
    policies judge the path sent. The aiohttp transport re-quotes URLs with yarl, which decodes
    percent-encoded unreserved characters (`/ch%61t` is sent as `/chat`), upper-cases escapes and
    quotes what needs quoting; the same is done here first (yarl's quoting is idempotent). A path
    that `path_refusal` refuses is kept as it came, for the record."""
    if _PLAIN_PATH.fullmatch(rest):
        return "/" + rest.decode("ascii")  # the usual path: nothing a client would change
    if path_refusal(rest) is not None:
        return "/" + rest.decode("latin-1")
    quoted = quote(rest, safe="/%!$&'()*+,;=:@~")  # raw non-ASCII bytes as UTF-8 escapes, once
    return str(yarl.URL("http://h/" + quoted).raw_path)


_PLAIN_PATH = re.compile(rb"[A-Za-z0-9\-._~/!$&'()*+,;=:@]*")


_SEGMENT_SPLIT = re.compile(r"[/\\]")


def path_refusal(path: bytes) -> str | None:
    """Why this upstream path is refused, or None. A `.` or `..` segment would be resolved by the
    HTTP client (or the upstream) into another path than the one policies judged: refused raw,
    percent-encoded (`%2e%2e`, `..%2f`), double-encoded, with backslashes or `;` parameters alike.
    A `#` would cut the path there."""
    if b"." not in path and b"%" not in path and b"\\" not in path and b"#" not in path:
        return None  # the usual path: nothing to decode
    if b"#" in path:
        return "the path contains '#'"
    text = path.decode("latin-1")
    for _ in range(4):  # a server that decodes again sees %252e%252e as ..
        for segment in _SEGMENT_SPLIT.split(text):
            if segment.partition(";")[0] in (".", ".."):
                return "the path contains a '.' or '..' segment"
        decoded = unquote(text, encoding="latin-1")
        if decoded == text:
            return None
        text = decoded
    return "the path is percent-encoded too many times"


__all__ = ["HostAllowList", "ProxyEdge", "from_browser", "host_name", "path_refusal", "public_query", "upstream_path"]
