"""interlock.yaml → validated, frozen settings. Errors name `file:line:col`.

Every section lives in this package so `interlock config show` and the JSON Schema see the whole
shape. One module per idea, and every name importable from here (`from interlock.config import
Route`), where the rest of the package imports it from:

- `settings.py`: `Settings`, the whole configuration, and the small sections only it holds;
- `ports.py`: the two ports and the bounds on what reaches them;
- `routes.py`: routes, upstreams, model aliases, timeouts, retry and breakers;
- `store.py`: where state lives: the store (SQLite or a database server) and the fleet's Redis;
- `guardrails.py`: the PII and secrets engines' settings and default actions;
- `loading.py`: a YAML document → `Settings`, `file:line:col` errors, the environment's overrides;
- `show.py`: the effective configuration as YAML, secrets masked (`config show`);
- `model.py`: the frozen, extra-forbidding base of every section.
"""

from __future__ import annotations

from interlock.config.guardrails import BUILTIN_RECOGNIZERS, CustomRecognizer, GuardrailAction, Guardrails
from interlock.config.loading import DEFAULT_CONFIG, fleet_warnings, load_settings, settings_from_document
from interlock.config.model import Model
from interlock.config.ports import Admin, HttpServer, Listen
from interlock.config.routes import (
    REFUSAL_WORDS,
    Breaker,
    ModelTarget,
    Retry,
    Route,
    TargetRetry,
    Timeouts,
    Upstream,
    http_url,
)
from interlock.config.settings import (
    PRICE_KEYS,
    SECRET_QUERY_PARAMS,
    Escalation,
    Identity,
    KillSwitch,
    McpPins,
    Otel,
    Settings,
    VirtualKey,
)
from interlock.config.show import mask_url_password, public_query, settings_to_yaml
from interlock.config.store import State, StateFailure, StateOnFailure, Store
from interlock.yamlsource import SourceError

__all__ = [
    "BUILTIN_RECOGNIZERS",
    "DEFAULT_CONFIG",
    "PRICE_KEYS",
    "REFUSAL_WORDS",
    "SECRET_QUERY_PARAMS",
    "Admin",
    "Breaker",
    "CustomRecognizer",
    "Escalation",
    "GuardrailAction",
    "Guardrails",
    "HttpServer",
    "Identity",
    "KillSwitch",
    "Listen",
    "McpPins",
    "Model",
    "ModelTarget",
    "Otel",
    "Retry",
    "Route",
    "Settings",
    "SourceError",
    "State",
    "StateFailure",
    "StateOnFailure",
    "Store",
    "TargetRetry",
    "Timeouts",
    "Upstream",
    "VirtualKey",
    "fleet_warnings",
    "http_url",
    "load_settings",
    "mask_url_password",
    "public_query",
    "settings_from_document",
    "settings_to_yaml",
]
