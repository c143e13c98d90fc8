"""The public surface: ``botkit.__all__`` is sorted and lists every public export."""

from __future__ import annotations

import subprocess
import sys

import botkit


def test_all_is_sorted_and_complete():
    public = {
        name for name, value in vars(botkit).items()
        if not name.startswith("_") and not isinstance(value, type(botkit))
    }
    assert botkit.__all__ == sorted(botkit.__all__)
    assert public | {"__version__"} == set(botkit.__all__)


def test_every_error_is_a_botkit_error():
    errors = [getattr(botkit, n) for n in botkit.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, botkit.BotkitError) for e in errors)


def test_importing_botkit_does_not_import_torch():
    code = "import sys, botkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
