"""Daemon settings: the sample config loads, typos and wrong types are refused by name."""

from pathlib import Path

import pytest

from mocksync.agent.settings import Settings, load_settings
from mocksync.errors import ValidationError

EXAMPLE = Path(__file__).parent.parent / "examples" / "config.toml"


def test_example_config_documents_and_loads_every_setting():
    s = load_settings(EXAMPLE)
    assert s.blind_window_s == 3.5 and s.offline_policy == "merge" and s.mdns is True
    text = EXAMPLE.read_text()
    for name in Settings.__dataclass_fields__:
        assert f"{name} =" in text or f"# {name} =" in text, f"{name} is not in examples/config.toml"


@pytest.mark.parametrize("body, word", [
    ("blind_windw_s = 2", "unknown setting 'blind_windw_s'"),
    ("mdns = 1", "mdns must be true or false"),
    ("blind_window_s = 'x'", "blind_window_s must be a number"),
    ("offline_policy = 'ask'", "offline_policy must be one of"),
    ("relay = 'ftp://x'", "relay must be http"),
    ("bind = '127.0.0.1'", "bind must be a list"),
    ("folder = [", "not valid TOML"),
])
def test_bad_settings_refused_by_name(tmp_path, body, word):
    p = tmp_path / "config.toml"
    p.write_text(body)
    with pytest.raises(ValidationError, match=word.replace("(", r"\(")):
        load_settings(p)


def test_missing_file_gives_defaults(tmp_path):
    assert load_settings(tmp_path / "none.toml") == Settings()


def test_overrides_skip_none():
    s = Settings().with_overrides(relay=None, mdns=False)
    assert s.mdns is False and s.relay is None
