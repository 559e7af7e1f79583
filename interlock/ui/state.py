"""What the admin API and the UI read of the running interlock (`AdminState`; `interlock.runtime.
Runtime` is one). Named here so that ui/, below the runtime in the layers, never imports it, not
even for its types: the server hands the runtime in (`admin.create_admin_app`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from interlock.config import Settings
    from interlock.policies.limits import Limiter
    from interlock.proxy.forward import Forwarder
    from interlock.proxy.stops import Stops
    from interlock.tracing.recorder import Recorder


class AdminState(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def ready(self) -> bool:
        """Started (`/ready` also waits for `warming`)."""
        ...

    @property
    def services(self) -> dict[str, Any]:
        """Optional services by name, for the health report (`otel`)."""
        ...

    @property
    def forwarder(self) -> Forwarder: ...

    @property
    def recorder(self) -> Recorder | None: ...

    @property
    def stops(self) -> Stops: ...

    @property
    def policy_limiter(self) -> Limiter | None: ...

    def warming(self) -> list[str]:
        """What is still being prepared after start: `/ready` is 503 until none."""
        ...
