"""What a call costs, with no configuration: the `genai-prices` catalogue, with `prices:` over it.

The catalogue is the `genai-prices` package (MIT, by Pydantic; https://github.com/pydantic/genai-prices):
prices per provider and model, shipped as data inside the package, so its version *is* the
catalogue's version and a new one comes with `make lock`. It can also fetch fresher prices at run
time (`UpdatePrices`); interlock never starts that (nothing phones home): it reads the bundled data
only, through `Provider.find_model` and `ModelInfo.calc_price`, not through the package's snapshot
(whose lookup caches grow with every model name an agent sends: ours are bounded).

A call's price comes from, in order:
1. `prices:` in interlock.yaml, `{model glob: {input, output, cached_input, cache_write}}` in USD per
   million tokens (cached_input and cache_write default to the input price): for models the
   catalogue lacks (a local model) or prices negotiated with a provider. Source `prices`.
2. The catalogue: the provider is found by the upstream's URL (api.openai.com, api.anthropic.com,
   OpenRouter, Groq...), else by the route's protocol (a test's or a proxy's own URL: `openai`,
   `anthropic`). Source `genai-prices <version>`.
3. MCP tool calls: `tool_prices: {tool glob: USD per call}`, else $0. Source `tool_prices` / `mcp`.
4. An operation the provider does not bill (counting tokens: `Adapter.unmetered`): $0, source `free`.
Anything else is unpriced: `cost_usd` None, source `unpriced` (a money budget then follows its
`limits.unpriced`), with the reason in `meta.cost_reason` when the response carried no usage.

Loading the catalogue takes ~0.7 s (import and data), so it is loaded in a thread when interlock
starts (the usage stage's `warmed`, which `/ready` waits for); pricing one call takes ~0.2 ms of
the catalogue's own arithmetic (measured: its usage decomposition), once, when the call ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from interlock.config import PRICE_KEYS, Settings
from interlock.core.call import Call
from interlock.core.views import TokenUsage
from interlock.protocols import ADAPTERS

log = logging.getLogger("interlock.prices")

CATALOGUE = "genai-prices"
#: The source of a call the provider does not bill (`Adapter.unmetered`: counting tokens).
FREE = "free"
#: The source of a call without a price (no price for its model, or no usage in its response).
UNPRICED = "unpriced"
#: Where the provider is not found by the upstream's URL, the protocol says which provider it speaks.
#: Bound on the remembered (provider, model) lookups: model names come from agents.
_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Cost:
    """A call's price: `usd` (None: unpriced) and where it came from (`prices`, `genai-prices 0.2.5`,
    `tool_prices`, `mcp` or `unpriced`)."""

    usd: float | None
    source: str


class PriceTable:
    """`prices:` (or `tool_prices:`): values by exact name first, else by the first matching glob
    (case-sensitive, as policy globs)."""

    def __init__(self, prices: Mapping[str, Any]) -> None:
        self.exact = dict(prices)

    def get(self, name: str | None) -> Any:
        if name is None:
            return None
        found = self.exact.get(name)
        if found is not None:
            return found
        return next((value for pattern, value in self.exact.items() if fnmatchcase(name, pattern)), None)


class _Catalogue:
    """The bundled genai-prices data, loaded once per process (in a thread: see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loaded = threading.Event()
        self.providers: list[Any] = []
        self.version = ""
        self.error: str | None = None

    def load(self) -> None:
        """Import the package and read its data (blocking, ~0.7 s; idempotent)."""
        with self._lock:
            if self.loaded.is_set():
                return
            # Startup: the catalogue (genai-prices, ~0.1 s to import, measured under shared load) loads here,
            # once, off the startup path.
            try:
                import genai_prices
                from genai_prices.data import providers

                self.providers, self.version = list(providers), genai_prices.__version__
            except Exception as exc:  # noqa: BLE001 - a broken install leaves every model unpriced, said once
                self.error = f"the price catalogue ({CATALOGUE}) cannot be loaded: {exc!r}"
            self.loaded.set()

    def warm(self) -> threading.Event:
        """Start loading in a daemon thread; the event is set when done."""
        if not self.loaded.is_set():
            threading.Thread(target=self.load, name="price-catalogue", daemon=True).start()
        return self.loaded


CATALOGUE_DATA = _Catalogue()


def warm_catalogue() -> threading.Event:
    return CATALOGUE_DATA.warm()


class Pricing:
    """Prices calls: the config's `prices:` and `tool_prices:` over the catalogue."""

    def __init__(
        self,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        tool_prices: Mapping[str, float] | None = None,
        route_urls: Mapping[str, str] | None = None,
        deployments: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.overrides = PriceTable(prices or {})
        self.tools = PriceTable(tool_prices or {})
        #: Each route's first upstream URL: the provider a call is priced at before it is sent.
        self.route_urls = dict(route_urls or {})
        #: Each route's `deployments` (an Azure deployment → its model): an attempt sent to a
        #: deployment (a model alias's target) is priced as the model it serves.
        self.deployments = {route: dict(names) for route, names in (deployments or {}).items() if names}
        self._providers: dict[tuple[str | None, str], Any] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._formulas: dict[tuple[int, tuple[str, ...]], Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> Pricing:
        urls = {name: route.upstreams[0].url for name, route in settings.routes.items() if route.upstreams}
        deployments = {name: route.deployments for name, route in settings.routes.items()}
        return cls(settings.prices, settings.tool_prices, urls, deployments)

    # -- readiness -------------------------------------------------------------------------------

    @staticmethod
    async def ready() -> None:
        """The catalogue is loaded (waits in a thread the first time, never on the event loop)."""
        if not CATALOGUE_DATA.loaded.is_set():
            await asyncio.to_thread(CATALOGUE_DATA.load)

    # -- a call ----------------------------------------------------------------------------------

    def call_priced(self, call: Call) -> bool:
        """Whether the call will have a price (asked before it is sent)."""
        return self.unpriced_reason(call) is None

    def unpriced_reason(self, call: Call) -> str | None:
        """Why the call will have no price (asked before it is sent: a money budget's
        `limits.unpriced` decides on it); None when it will have one. A free operation (counting
        tokens) has one: $0."""
        unmetered = ADAPTERS[call.protocol].unmetered(call)
        if unmetered is not None:
            return None if unmetered.free else unmetered.reason
        if self.priced(call.protocol, self.route_urls.get(call.route), call.model):
            return None
        model = "a call without a model" if call.model is None else f"model {call.model!r}"
        return f"{model} has no price (neither in the price catalogue nor in `prices:`)"

    def price_call(self, call: Call, usage: TokenUsage | None) -> Cost | None:
        """The call's price, from its usage (None: nothing to price). Priced at the upstream and
        model it was last sent to (routing may have failed over or rewritten the model)."""
        if ADAPTERS[call.protocol].tool_server:
            view = call.view
            if view is not None and view.operation == "tools/call":
                return self.tool_cost(view.tool_name)
            return Cost(0.0, "mcp")
        last = call.attempts[-1] if call.attempts else None
        url = last.url if last is not None else self.route_urls.get(call.route)
        model = (last.model if last is not None else None) or call.model
        deployments = self.deployments.get(call.route)
        if deployments is not None and model is not None:
            model = deployments.get(model, model)
        return self.cost(call.protocol, url, model, usage)

    # -- lookups (the catalogue must be loaded: `ready`, or `CATALOGUE_DATA.load()` off the loop) --

    def priced(self, protocol: str, url: str | None, model: str | None) -> bool:
        """Whether a call to `model` has a price (for a money budget's `unpriced` rule, before the call)."""
        if ADAPTERS[protocol].tool_server:
            return True
        if self.overrides.get(model) is not None:
            return True
        return model is not None and self._model(protocol, url, model) is not None

    def known(self, model: str) -> bool:
        """Whether any provider of the catalogue, or `prices:`, prices `model` (`policy check`'s lint:
        it does not know which route a call will take)."""
        if self.overrides.get(model) is not None:
            return True
        CATALOGUE_DATA.load()
        return any(p.find_model(model, all_providers=CATALOGUE_DATA.providers) for p in CATALOGUE_DATA.providers)

    def cost(self, protocol: str, url: str | None, model: str | None, usage: TokenUsage | None) -> Cost | None:
        """The price of a call with this usage; None when there is nothing to price (no usage)."""
        if ADAPTERS[protocol].tool_server:
            return None
        if usage is None:
            return None
        override = self.overrides.get(model)
        if override is not None:
            return Cost(_override_cost(override, usage), "prices")
        found = None if model is None else self._model(protocol, url, model)
        if found is None:
            return Cost(None, UNPRICED)
        provider, info = found
        values = {
            "input_tokens": usage.input,
            "output_tokens": usage.output,
            "cache_read_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
            "output_reasoning_tokens": usage.reasoning,
        }
        counts = {k: v for k, v in values.items() if v}
        try:
            price = self._affine_price(provider, info, counts)
        except Exception as exc:  # noqa: BLE001 - usage the catalogue refuses (inconsistent counts): unpriced, said
            log.warning("model %r: the price catalogue cannot price this usage (%s): unpriced", model, exc)
            return Cost(None, UNPRICED)
        return Cost(float(price), f"{CATALOGUE} {CATALOGUE_DATA.version}")

    def _affine_price(self, provider: Any, info: Any, counts: dict[str, int]) -> Decimal:
        """The catalogue's price of these counts. The catalogue's own arithmetic (a decomposition of
        the usage into priced units) takes ~0.2 ms a call, measured; for a model whose prices are
        plain per-unit prices (no tiers by prompt size) the price is affine in the counts, so it is
        worked out once per (model price, kinds of tokens) from the catalogue itself, checked at a
        third point, and then costs a few µs. Anything not affine is priced by the catalogue each time."""
        now = dt.datetime.now(dt.UTC)
        model_price = info.get_prices(now)
        key = (id(model_price), tuple(counts))
        formula = self._formulas.get(key, _UNKNOWN)
        if formula is _UNKNOWN:
            formula = _affine(lambda c: _catalogue_price(provider, info, c, now), model_price, tuple(counts))
            if len(self._formulas) < _MEMO_SIZE:
                self._formulas[key] = formula
        if formula is None:
            return _catalogue_price(provider, info, counts, now)
        base, at, slopes = formula
        total: Decimal = base + sum((slopes[k] * (counts[k] - at[k]) for k in counts), Decimal(0))
        return total

    def tool_cost(self, tool: str | None) -> Cost:
        """An MCP tool call's price: `tool_prices:`, else $0."""
        price = self.tools.get(tool)
        return Cost(float(price), "tool_prices") if price is not None else Cost(0.0, "mcp")

    def _provider(self, protocol: str, url: str | None) -> Any:
        key = (url, protocol)
        if key in self._providers:
            return self._providers[key]
        found = None
        if url is not None:
            found = next((p for p in CATALOGUE_DATA.providers if p.api_pattern and re.match(p.api_pattern, url)), None)
        wanted = ADAPTERS[protocol].price_provider if protocol in ADAPTERS else None
        if found is None and wanted is not None:
            found = next((p for p in CATALOGUE_DATA.providers if p.id == wanted), None)
        if len(self._providers) < _MEMO_SIZE:
            self._providers[key] = found
        return found

    def _model(self, protocol: str, url: str | None, model: str) -> tuple[Any, Any] | None:
        CATALOGUE_DATA.load()  # a no-op once loaded (callers on the event loop await `ready` first)
        provider = self._provider(protocol, url)
        if provider is None:
            return None
        key = (provider.id, model)
        if key in self._models:
            return self._models[key]  # type: ignore[no-any-return]
        info = provider.find_model(model, all_providers=CATALOGUE_DATA.providers)
        found = None if info is None else (provider, info)
        if len(self._models) < _MEMO_SIZE:
            self._models[key] = found
        return found


def _override_cost(price: Mapping[str, float], usage: TokenUsage) -> float:
    input_price = price.get("input", 0.0)
    uncached = max(0, usage.input - usage.cache_read - usage.cache_write)
    return (
        uncached * input_price
        + usage.cache_read * price.get("cached_input", input_price)
        + usage.cache_write * price.get("cache_write", input_price)
        + usage.output * price.get("output", 0.0)
    ) / 1e6


_UNKNOWN = object()
#: Where an affine price is measured: every kind of token at a count that keeps the parts within
#: their whole (cached input within input, reasoning within output), and the point it is checked at.
_N = 1_000_000
_BASE = {"input_tokens": 10 * _N, "output_tokens": 10 * _N, "cache_read_tokens": _N, "cache_write_tokens": _N}
_BASE["output_reasoning_tokens"] = _N
_CHECK = {"input_tokens": 7 * _N + 3, "output_tokens": 3 * _N + 7, "cache_read_tokens": 2 * _N + 1}
_CHECK |= {"cache_write_tokens": _N + 5, "output_reasoning_tokens": 2 * _N + 11}


def _catalogue_price(provider: Any, info: Any, counts: dict[str, int], now: dt.datetime) -> Decimal:
    # genai-prices is loaded by `load` before any price is read: a lookup in sys.modules, kept out of startup.
    from genai_prices import Usage

    total: Decimal = info.calc_price(Usage(**counts), provider, genai_request_timestamp=now).total_price
    return total


def _affine(
    price: Any, model_price: Any, kinds: tuple[str, ...]
) -> tuple[Decimal, dict[str, int], dict[str, Decimal]] | None:
    """(price at the base, the base, price per token of each kind), or None when the model's price
    is not affine in these counts (tiered prices, or the check point disagrees)."""
    if any(value is not None and not isinstance(value, Decimal) for value in vars(model_price).values()):
        return None  # tiered by prompt size
    at = {k: _BASE[k] for k in kinds}
    base = price(at)
    slopes = {k: (price({**at, k: at[k] + _N}) - base) / _N for k in kinds}
    check = {k: _CHECK[k] for k in kinds}
    if base + sum((slopes[k] * (check[k] - at[k]) for k in kinds), Decimal(0)) != price(check):
        return None
    return base, at, slopes


def cost_text(usd: Any, source: Any = None) -> str:
    """How a cost reads in the CLI and the UI: `$0.0123`; `unpriced` for usage without a price; empty
    when nothing was priced. Small costs keep 3 significant digits (a cached chat call costs a few
    millionths of a dollar)."""
    if usd is None:
        return "unpriced" if source == "unpriced" else ""
    return f"${usd:.4f}" if usd >= 0.01 or usd == 0 else f"${usd:.3g}"


__all__ = [
    "CATALOGUE",
    "CATALOGUE_DATA",
    "PRICE_KEYS",
    "FREE",
    "UNPRICED",
    "Cost",
    "PriceTable",
    "Pricing",
    "cost_text",
    "warm_catalogue",
]
