from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from interlock.testing import Running


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


_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def openai_client(running: Running, agent: str = "support-bot", **headers: str) -> openai.OpenAI:
    """An openai SDK client for this agent (closed after the test)."""
    client = openai.OpenAI(
        base_url=running.url + "/openai",
        api_key="sk-agent",
        max_retries=0,
        default_headers={"X-Interlock-Agent": agent, **headers},
    )
    _CLIENTS.append(client)
    return client


def anthropic_client(running: Running) -> anthropic.Anthropic:
    """An anthropic SDK client (closed after the test)."""
    client = anthropic.Anthropic(base_url=running.url + "/anthropic", api_key="sk-agent", max_retries=0)
    _CLIENTS.append(client)
    return client
