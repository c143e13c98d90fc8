"""The web widget's tests use fixtures shared with the API tests, in tests/conftest.py:

- ``def web_server``: a real botkit server (uvicorn on loopback, web adapter, scripted
  generator, temporary SQLite) — see ``tests/live_server.py`` for what it offers;
- ``make_web_server(**adapter_settings)``: the same with ``[adapters.web]`` settings.
"""
