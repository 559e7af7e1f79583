"""interlock.yaml → `Settings`: the embedded default, the environment's overrides, and every error
as `file:line:col: message` at the line that caused it (`config check` and `serve` alike)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interlock.config.settings import Settings
from interlock.config.store import BOTH_LOCATIONS
from interlock.yamlsource import Document, load_yaml, parse_yaml

DEFAULT_CONFIG = """\
# interlock's embedded default: what `interlock serve` runs with no --config.
listen: {host: 127.0.0.1, port: 4141}
admin: {host: 127.0.0.1, port: 4142}
store: {path: ./interlock.db}
default_agent: default
# Secure by default (docs/security.md): a credential in a request (an API key, a token, a private
# key an agent read from a file) reaches no provider: it is replaced by a placeholder, restored in
# the reply for the agent. Only the secrets scanner runs (no PII entities: nothing else is loaded).
guardrails: {request: {SECRET: redact}, entities: []}
routes:
  openai:
    protocol: openai
    upstream: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY:-}
  anthropic:
    protocol: anthropic
    upstream: https://api.anthropic.com
    api_key: ${ANTHROPIC_API_KEY:-}
  local:
    protocol: openai
    upstream: http://127.0.0.1:11434/v1
"""


def _blank_to_none(data: Any) -> Any:
    # `${OPENAI_API_KEY:-}` expands to "" when unset: treat an empty key as no key.
    if isinstance(data, dict):
        return {k: (None if k in ("api_key", "token") and v == "" else _blank_to_none(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_blank_to_none(v) for v in data]
    return data


def settings_from_document(document: Document) -> Settings:
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise document.error((), "the configuration must be a mapping")
    routes = data.get("routes")
    for name in routes if isinstance(routes, dict) else ():
        if not isinstance(name, str) or not name or "/" in name:
            message = f"route name {name!r} must be one non-empty path segment (agents call /{name}/...)"
            raise document.error(("routes", name), f"routes: {message}")
    store = data.get("store")
    if isinstance(store, dict) and store.get("url") is not None and "path" in store:
        # At the `url` line (the model's own check could only name the `store:` line).
        raise document.error(("store", "url"), f"store.url: {BOTH_LOCATIONS}")
    data = _store_writer_from_environment(_store_url_from_environment(data))
    try:
        settings = Settings.model_validate({**_blank_to_none(data), "source": document.file})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        # pydantic reports tuple members and union branches in the path; keep the YAML part.
        path = tuple(p for p in loc if not (isinstance(p, str) and p in {"function-after[_one_upstream_form()]"}))
        where = ".".join(str(p) for p in path) or "(top level)"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise document.error(path, f"{where}: {message}") from None
    _check_policy_paths(document, settings)
    _check_vault_key(document, settings)
    return settings


def _check_vault_key(document: Document, settings: Settings) -> None:
    """A vault on Redis keeps values encrypted, so it needs a key: without one, startup stops here
    (values are never written to a shared server in the clear, and a key made up per process would
    leave the other replicas unable to restore them). Guardrails could run: the config's actions, or
    any policy (a policy may turn redaction on)."""
    guardrails = settings.guardrails
    if not (guardrails.request or guardrails.response or settings.policies):
        return
    state = settings.state.resolved()
    if state.url and not state.vault_key:
        message = (
            "state: the redaction vault is on Redis (state.url) and needs state.vault_key (or the "
            "INTERLOCK_VAULT_KEY environment variable): 32+ characters, the same on every replica"
        )
        raise document.error(("state",), message)


def fleet_warnings(settings: Settings) -> list[str]:
    """What a store on a database server (`store.url`) does not make shared, as `file:line:col:
    message` (`config check` prints them, `serve` logs them at startup): without `state.url` the
    limits, budgets and concurrency caps count per process and the vault lives in it, so N
    replicas give N budgets; and the spill file defaults to a local path. Warnings, not errors: one
    interlock recording to PostgreSQL is a fine deployment; a fleet must be told (docs/fleet.md)."""
    store = settings.store
    if not store.url:
        return []
    from_env = os.environ.get("INTERLOCK_STORE_URL") == store.url
    named = "INTERLOCK_STORE_URL" if from_env else "store.url"
    document = load_yaml(settings.source, expand_env=True) if Path(settings.source).is_file() else None

    def at(path: tuple[str, ...], message: str) -> str:
        line, col = document.locate(path) if document is not None else (1, 1)
        return f"{settings.source}:{line}:{col}: {message}"

    found: list[str] = []
    guardrails = settings.guardrails
    if not settings.state.resolved().url:
        shared = []
        if settings.policies:
            shared.append(
                "limits, budgets and concurrency caps count per replica (day counters saved to the local"
                f" file {store.path}), so N replicas allow N times each limit"
            )
        if guardrails.request or guardrails.response or settings.policies:
            shared.append(
                "the redaction vault is per replica (a session's next turn on another replica cannot restore its placeholders)"
            )
        if shared:
            found.append(
                at(
                    ("store", "url"),
                    f"{named} shares the calls but not the state: without state.url (Redis), "
                    + "; ".join(shared)
                    + ". Set state.url for a fleet; for one replica this is expected",
                )
            )
    if store.spill_path is None:
        found.append(
            at(
                ("store", "url"),
                f"{named}: calls that cannot be written while the database is unreachable spill to the local"
                f" file {store.path}.spill (beside store.path, in the working directory): set store.spill_path"
                " to a persistent volume, or they are lost with the container",
            )
        )
    return found


def _store_url_from_environment(data: dict[str, Any]) -> dict[str, Any]:
    """`INTERLOCK_STORE_URL` names the store whatever the file says (a fleet's pods share one
    config and get the database from a Secret): it replaces the file's `store.url` and `path`."""
    url = os.environ.get("INTERLOCK_STORE_URL")
    store = data.get("store")
    if not url or not (store is None or isinstance(store, dict)):
        return data
    kept = {k: v for k, v in (store or {}).items() if k not in ("path", "url")}
    return {**data, "store": {**kept, "url": url}}


def _store_writer_from_environment(data: dict[str, Any]) -> dict[str, Any]:
    """`INTERLOCK_STORE_WRITER` names this instance's chain (docs/audit.md), whatever the file says
    (the environment wins, as for every setting it names): a fleet's pods share one config and take it
    from their own name (the downward API)."""
    writer = os.environ.get("INTERLOCK_STORE_WRITER")
    store = data.get("store")
    if not writer or not (store is None or isinstance(store, dict)):
        return data
    return {**data, "store": {**(store or {}), "writer": writer}}


def _check_policy_paths(document: Document, settings: Settings) -> None:
    """A policy path that does not exist stops startup (a typo must not run with no policy), so it is
    an error here, at the line of interlock.yaml that names it, for `config check` and `serve` alike.
    Relative paths are relative to the configuration file (as `policies.stage.policy_paths` reads them)."""
    base = Path(document.file).parent if Path(document.file).is_file() else Path.cwd()
    for i, entry in enumerate(settings.policies):
        resolved = Path(entry) if Path(entry).is_absolute() else base / entry
        if not resolved.exists():
            message = f"policies[{i}]: {entry!r} does not exist ({resolved}; relative to this file)"
            raise document.error(("policies", i), message)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load `path`, or the embedded default when `path` is None. Raises SourceError."""
    if path is None:
        return settings_from_document(parse_yaml(DEFAULT_CONFIG, "<embedded default>", expand_env=True))
    return settings_from_document(load_yaml(path, expand_env=True))
