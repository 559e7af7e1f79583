"""The effective configuration as YAML for `interlock config show`, secrets masked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from interlock.config.settings import Settings


def mask_url_password(url: str) -> str:
    """`redis://:secret@host:6379/0` → `redis://:***@host:6379/0` (what `config show` and logs may print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def settings_to_yaml(settings: Settings) -> str:
    """The effective configuration as YAML (the environment's overrides applied), with secrets
    masked: keys, tokens, the hash key, header values (they carry credentials), passwords in the
    store's and the state's URLs, and virtual keys (the names are the credentials)."""
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
            mask_headers(upstream)
    if data.get("admin", {}).get("token"):
        data["admin"]["token"] = "***"
    for section in ("otel", "escalation"):
        mask_headers(data.get(section) or {})
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
