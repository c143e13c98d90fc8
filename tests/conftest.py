"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import LiveServer


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted copy of the embedded model for every slow test of the session."""
    return tmp_path_factory.mktemp("embedded-cache")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where CUDA is available."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run bench/gpu.sh on a GPU machine)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def make_web_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``make_web_server(**web_settings)``: start a server with those [adapters.web] keys
    (``api_keys=(...)`` and ``server_settings={...}`` set the API keys and [server])."""
    started: list[LiveServer] = []

    def make(**settings: Any) -> LiveServer:
        folder = tmp_path / f"server{len(started)}"
        folder.mkdir()
        server = LiveServer(folder, **settings)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def web_server(make_web_server: Callable[..., LiveServer]) -> LiveServer:
    return make_web_server()
