from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock.testing import Running
from tests.proxy.routing_support import anthropic_client as anthropic_client
from tests.proxy.routing_support import openai_client as routed_openai_client


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a policy file under tmp_path/policies/ and return the folder."""
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)

    def write(text: str, name: str = "policy.yaml") -> Path:
        (folder / name).write_text(textwrap.dedent(text))
        return folder

    return write


@pytest.fixture
def with_policy(make_interlock: Any, write_policy: Callable[[str, str], Path]) -> Callable[..., Running]:
    """Start interlock with this policy text (and extra config)."""

    def start(text: str, **config: Any) -> Running:
        folder = write_policy(text)
        return make_interlock(policies=[str(folder)], **config)  # type: ignore[no-any-return]

    return start


def openai_client(running: Running, agent: str = "support-bot", **headers: str) -> openai.OpenAI:
    """An openai SDK client for this agent (closed after the test)."""
    return routed_openai_client(running, default_headers={"X-Interlock-Agent": agent, **headers})
