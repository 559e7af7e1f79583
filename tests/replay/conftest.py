from __future__ import annotations

import pytest
from replay_helpers import Incident, record_incident


@pytest.fixture(scope="session")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Incident:
    """A weather agent's session recorded through interlock and exported as a bundle. Recorded once:
    replays never write to a bundle (a test checks it), so every test can share it."""
    return record_incident(tmp_path_factory.mktemp("incident"))
