from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from replay_helpers import Incident, record_incident


@pytest.fixture
def incident(tmp_path: Path) -> Iterator[Incident]:
    """A weather agent's session recorded through interlock and exported as a bundle."""
    yield record_incident(tmp_path)
