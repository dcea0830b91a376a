"""Shared test helpers (issue 14): one place for what several test modules need.

Why a package: test modules used to import helpers from each other (`from test_relay_sync
import Lab`), so changing one test file could break five others, and pytest collected the
same helpers twice. Test modules now import only from here (and from the plain helper
modules next to them: envfactory, editor_standin, daemon_harness, attack_tools, netns), and
shared fixtures live in tests/conftest.py. No test module imports another.

- `polling`: the one bounded wait (`wait_until` async, `wait_sync` blocking).
- `relaylab`: in-process agents with a real relay on 127.0.0.1 (`Lab`, the `lab` fixture's
  object) and the small actions relay tests share.
- `syncsupport`: in-memory logs and links for the sans-IO sync protocol tests.
"""
