"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted copy of the embedded model for every slow test of the session."""
    return tmp_path_factory.mktemp("embedded-cache")
