"""A real API process (granian) beside the session's workers, for clients that need a URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.core.settings import Settings
from tests.conftest import WorkerProcess, start_api


@pytest.fixture(scope="session")
def live_api(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Base URL of an API process on the test database and broker, with workers running."""
    process, base = start_api(settings, tmp_path_factory.mktemp("live-api"))
    yield base
    process.stop()
