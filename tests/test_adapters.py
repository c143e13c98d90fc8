"""Adapter discovery through the botkit.adapters entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from botkit import adapters
from botkit.adapters import Adapter, create_adapter, load_adapter_class
from botkit.errors import AdapterLoadError
from botkit.terminal import TerminalAdapter


def test_terminal_adapter_is_registered_like_any_plugin():
    assert "terminal" in adapters.available_adapters()
    assert load_adapter_class("terminal") is TerminalAdapter


def test_unknown_adapter_names_the_installed_ones():
    with pytest.raises(AdapterLoadError, match="'smoke-signals'.*installed: .*terminal"):
        load_adapter_class("smoke-signals")


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    found = {name: EntryPoint(name=name, value=value, group=adapters.ENTRY_POINT_GROUP)}
    monkeypatch.setattr(adapters, "available_adapters", lambda: found)


def test_adapter_that_fails_to_import_raises_adapter_load_error(monkeypatch):
    fake_entry_points(monkeypatch, "broken", "botkit_no_such_module:Adapter")
    with pytest.raises(AdapterLoadError, match="'broken'.*ModuleNotFoundError"):
        load_adapter_class("broken")


def test_entry_point_that_is_not_an_adapter_is_refused(monkeypatch):
    fake_entry_points(monkeypatch, "odd", "json:dumps")
    with pytest.raises(AdapterLoadError, match="is not a botkit.adapters.Adapter"):
        load_adapter_class("odd")


async def test_adapter_rejecting_its_config_fails_before_start(botkit_engine):
    with pytest.raises(AdapterLoadError, match="'terminal'.*takes no settings; unknown: colour"):
        create_adapter("terminal", botkit_engine, {"colour": "green"})


def test_adapter_contract_requires_start_and_stop():
    class Half(Adapter):
        name = "half"

        async def start(self) -> None: ...

    with pytest.raises(TypeError):
        Half(None)  # type: ignore[abstract,arg-type]
