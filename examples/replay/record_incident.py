"""Record the incident this example replays, offline: the agent runs through interlock against
interlock's scripted fake provider (standing in for the real model, which answered these turns in
production), then the session is exported to incident.db, exactly as

    interlock export --session support-ticket-1017 -o incident.db

does on the machine where an incident happened.

    python examples/replay/record_incident.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from agent import Shop, run  # noqa: E402

from interlock.scripted import Script, ScriptedUpstream, ToolUse  # noqa: E402
from interlock.testing import run_interlock, settings_for_test  # noqa: E402
from interlock.tracing.backend import open_store  # noqa: E402

#: What the model answered in production: look up, refund, then (the bug) refund again, then answer.
MODEL_TURNS = [
    Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_lookup")]),
    Script(tool_calls=[ToolUse("refund", {"order_id": "42", "amount": 30.0}, id="call_refund_1")]),
    Script(tool_calls=[ToolUse("refund", {"order_id": "42", "amount": 30.0}, id="call_refund_2")]),
    Script(text="I have refunded order 42 (30.00). Sorry about the broken item!"),
]


def record(bundle: Path, workdir: Path) -> int:
    store = workdir / "interlock.db"
    with ScriptedUpstream() as provider:
        provider.script(*MODEL_TURNS)
        routes = {"openai": {"protocol": "openai", "upstream": provider.url + "/v1", "api_key": "sk-provider"}}
        settings = settings_for_test({"routes": routes, "store": {"path": str(store)}, "shutdown_grace": 1})
        with run_interlock(settings) as running:
            saved = os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY")
            os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = running.url + "/openai", "sk-agent"
            try:
                run("Please refund order 42, it arrived broken.", Shop())
            finally:
                for name, value in zip(("OPENAI_BASE_URL", "OPENAI_API_KEY"), saved, strict=True):
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    with open_store(store) as opened:
        return opened.export(bundle, session="support-ticket-1017")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        count = record(HERE / "incident.db", Path(tmp))
    print(f"exported {count} calls to {HERE / 'incident.db'}")
