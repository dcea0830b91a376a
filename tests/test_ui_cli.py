"""The web page's settings and `mocksync open` from the command line (issue 19).

Why: a port typo must be refused by name before the daemon starts (not turn into a page that
never shows up), and `open` must fail plainly when no daemon runs, and never start a browser
where none can be shown (CI, ssh sessions): only BROWSER or a desktop session allow it.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mocksync.agent.settings import DEFAULT_UI_PORT, Settings, load_settings
from mocksync.cli import main
from mocksync.cli.common import EXIT_NO_DAEMON, EXIT_USAGE
from mocksync.cli.uicmd import _can_open_browser
from mocksync.errors import ValidationError


def test_the_page_is_on_by_default_on_its_port() -> None:
    s = Settings()
    assert s.ui is True and s.ui_port == DEFAULT_UI_PORT


@pytest.mark.parametrize("body, word", [
    ("ui_port = 70000", "ui_port must be a whole number 0..65535"),
    ("ui_port = -1", "ui_port must be a whole number"),
    ("ui_port = 8385.5", "ui_port must be a whole number"),
    ("ui_port = '8385'", "ui_port must be a number"),
    ("ui = 1", "ui must be true or false"),
])
def test_bad_page_settings_are_refused_by_name(tmp_path, body, word) -> None:
    p = tmp_path / "config.toml"
    p.write_text(body + "\n")
    with pytest.raises(ValidationError, match=word):
        load_settings(p)


def test_page_settings_load(tmp_path) -> None:
    p = tmp_path / "config.toml"
    p.write_text("ui = false\nui_port = 0\n")
    s = load_settings(p)
    assert s.ui is False and s.ui_port == 0


def test_daemon_refuses_a_bad_ui_port_before_starting(tmp_path) -> None:
    res = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), "daemon",
                                    "--folder", str(tmp_path / "f"), "--ui-port", "99999"])
    assert res.exit_code == EXIT_USAGE
    assert "ui_port must be a whole number" in res.output


def test_open_without_a_daemon_says_so(tmp_path) -> None:
    res = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), "open", "--no-browser",
                                    "--json"])
    assert res.exit_code == EXIT_NO_DAEMON
    assert '"daemon_not_running"' in res.output


def test_a_browser_is_opened_only_where_one_can_be_shown(monkeypatch) -> None:
    for var in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert not _can_open_browser()
    monkeypatch.setenv("DISPLAY", ":0")
    assert _can_open_browser()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("BROWSER", "true")
    assert _can_open_browser()
