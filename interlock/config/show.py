"""The effective configuration as YAML for `interlock config show`, secrets masked."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus, urlsplit

import yaml

from interlock.config.settings import SECRET_QUERY_PARAMS, Settings

#: Query parameters of a configured URL that carry a credential: libpq (`postgresql://app@db/calls?
#: password=...`) and redis-py (`redis://host/0?password=...`) take any connection parameter there.
_URL_SECRET_PARAMS = frozenset({*SECRET_QUERY_PARAMS, "sslpassword"})


def public_query(query: str, secret: frozenset[str]) -> str:
    """The query string with the values of credential parameters replaced by `***`; the rest is
    kept byte for byte."""
    if not query or not secret:
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        if value and unquote_plus(name).strip().lower() in secret:
            parts[i] = f"{name}{eq}***"
            changed = True
    return "&".join(parts) if changed else query


def mask_url_password(url: str) -> str:
    """A configured URL as `config show`, messages and the UI may print it: the password of its user
    info masked (`redis://:secret@host:6379/0` → `redis://:***@host:6379/0`), and the values of its
    credential query parameters (`postgresql://app@db/calls?password=secret` → `?password=***`)."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, public_query(parts.query, _URL_SECRET_PARAMS)
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


def settings_to_yaml(settings: Settings) -> str:
    """The effective configuration as YAML (the environment's overrides applied), with secrets
    masked: keys, tokens, the hash key, header values (they carry credentials), passwords and
    credential query parameters in every URL (upstreams, store, state, OTel, webhook), and virtual
    keys (the names are the credentials)."""
    data = settings.model_dump(mode="json", exclude_defaults=False)

    def mask_headers(section: dict[str, Any]) -> None:
        if section.get("headers"):
            section["headers"] = {name: "***" for name in section["headers"]}

    for route in data.get("routes", {}).values():
        route.pop("upstream", None)
        route.pop("api_key", None)
        for upstream in route.get("upstreams", []):
            if upstream.get("api_key"):
                upstream["api_key"] = "***"
            if upstream.get("url"):  # `https://user:password@host/v1?key=...`
                upstream["url"] = mask_url_password(upstream["url"])
            mask_headers(upstream)
    if data.get("admin", {}).get("token"):
        data["admin"]["token"] = "***"
    for section, url in (("otel", "endpoint"), ("escalation", "webhook")):
        mask_headers(data.get(section) or {})
        if (data.get(section) or {}).get(url):
            data[section][url] = mask_url_password(data[section][url])
    if (data.get("guardrails") or {}).get("hash_key"):
        data["guardrails"]["hash_key"] = "***"
    # Effective values: the environment's `INTERLOCK_STATE_URL` and `INTERLOCK_VAULT_KEY` win over the
    # file (`State.resolved`, the one precedence rule; `INTERLOCK_STORE_URL` is applied at load).
    effective = settings.state.resolved()
    state = data.setdefault("state", {})
    state["url"], state["vault_key"] = effective.url, effective.vault_key
    if state.get("vault_key"):
        state["vault_key"] = "***"
    if state.get("url"):
        state["url"] = mask_url_password(state["url"])
    store = data.get("store") or {}
    if store.get("url"):  # `postgresql://user:password@host/db`
        store["url"] = mask_url_password(store["url"])
    data["virtual_keys"] = {f"***{key[-4:]}": value for key, value in (data.get("virtual_keys") or {}).items()}
    return str(yaml.safe_dump(data, sort_keys=False))
