"""Daemon settings: defaults, then `HOME/config.toml`, then command-line flags.

Every setting is documented in examples/config.toml. Unknown keys and wrong types are refused
with the key named, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .. import MOCKOON_MAX_MIGRATION
from ..errors import ValidationError
from ..relay.compaction import SNAPSHOT_CHANGESETS

OFFLINE_POLICIES = ("merge", "prompt")
#: Relay addresses a daemon knows (instances of one relay cluster).
MAX_RELAYS = 16
#: Port of the local web page (issue 19) unless config.toml or `--ui-port` says otherwise;
#: next to Syncthing's 8384, a port people already keep for a sync tool's page.
DEFAULT_UI_PORT = 8385
#: Highest TCP port number (0 = any free port, chosen when the daemon starts).
MAX_PORT = 65535
#: Highest `snapshot_changesets` (a snapshot at least this often, or none).
MAX_SNAPSHOT_CHANGESETS = 1_000_000
#: Bounds of `lan_link_idle_s` (seconds): shorter would close a link between two edits of
#: one person; longer keeps a link nobody uses costing idle CPU for an hour.
MIN_LINK_IDLE_S = 1.0
MAX_LINK_IDLE_S = 3600.0
#: The default of `lan_link_idle_s` (net.overlay.LINK_IDLE_S, not imported: settings sit
#: below the network layer).
DEFAULT_LINK_IDLE_S = 20.0


@dataclass(frozen=True)
class Settings:
    #: Folder holding the Mockoon environment files.
    folder: Path = Path.home() / "mockoon"
    #: Hold remote writes to a file until this long after the editor last saved it (docs/design/merge.md "Editors and the file").
    blind_window_s: float = 3.5
    #: Highest Mockoon `lastMigration` this device's Mockoon can read.
    mockoon_max_migration: int = MOCKOON_MAX_MIGRATION
    #: What to do when both sides changed an environment while offline: merge, or prompt.
    offline_policy: str = "merge"
    #: Watcher batching (ms): a batch is handled after `watch_step_ms` of quiet.
    watch_step_ms: int = 5
    watch_debounce_ms: int = 50
    #: Addresses to sync over (mDNS and WebRTC candidates); empty = all interfaces.
    bind: tuple[str, ...] = ()
    #: Relay URL (http://host:port or https://host:port), or None.
    relay: str | None = None
    #: More addresses of the same relay cluster, tried in order when `relay` does not answer
    #: (config.toml: `relay = ["https://a:8765", "https://b:8765"]`).
    relay_more: tuple[str, ...] = ()
    #: Announce and discover peers with mDNS on the LAN.
    mdns: bool = True
    #: ICE servers for WebRTC (none by default: no STUN traffic leaves the machine).
    ice_servers: tuple[str, ...] = field(default_factory=tuple)
    #: Serve the local web page (on 127.0.0.1 only; `mocksync open` gives its address).
    ui: bool = True
    #: Port of the local web page on 127.0.0.1 (0: any free port).
    ui_port: int = DEFAULT_UI_PORT
    #: Relay compaction: upload a snapshot of an environment once this many change sets were
    #: made since the last one (0: never; relay.compaction.SNAPSHOT_CHANGESETS by default).
    snapshot_changesets: int = SNAPSHOT_CHANGESETS
    #: A LAN link opened on demand (not one of the few overlay links a device keeps) is
    #: closed after this many seconds without a change set either way (issue 16).
    lan_link_idle_s: float = DEFAULT_LINK_IDLE_S

    def with_overrides(self, **kw: Any) -> Settings:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def check(self) -> Settings:
        if self.offline_policy not in OFFLINE_POLICIES:
            raise ValidationError(
                f"offline_policy must be one of {', '.join(OFFLINE_POLICIES)}, not {self.offline_policy!r}"
            )
        if not 0 <= self.blind_window_s <= 60:
            raise ValidationError("blind_window_s must be between 0 and 60 seconds")
        for url in ((self.relay,) if self.relay is not None else ()) + self.relay_more:
            if not url.startswith(("http://", "https://")):
                raise ValidationError(
                    f"relay must be http://host:port or https://host:port, not {url!r}")
        if (not isinstance(self.ui_port, int) or isinstance(self.ui_port, bool)
                or not 0 <= self.ui_port <= MAX_PORT):
            raise ValidationError(f"ui_port must be a whole number 0..{MAX_PORT} (0: any free "
                                  f"port), not {self.ui_port!r}")
        if (not isinstance(self.snapshot_changesets, int)
                or isinstance(self.snapshot_changesets, bool)
                or not 0 <= self.snapshot_changesets <= MAX_SNAPSHOT_CHANGESETS):
            raise ValidationError(f"snapshot_changesets must be a whole number 0.."
                                  f"{MAX_SNAPSHOT_CHANGESETS} (0: never), not "
                                  f"{self.snapshot_changesets!r}")
        if (isinstance(self.lan_link_idle_s, bool)
                or not isinstance(self.lan_link_idle_s, int | float)
                or not MIN_LINK_IDLE_S <= self.lan_link_idle_s <= MAX_LINK_IDLE_S):
            raise ValidationError(f"lan_link_idle_s must be {MIN_LINK_IDLE_S:g}.."
                                  f"{MAX_LINK_IDLE_S:g} seconds, not {self.lan_link_idle_s!r}")
        if self.relay_more and self.relay is None:
            raise ValidationError("relay_more needs a first relay address (relay)")
        if 1 + len(self.relay_more) > MAX_RELAYS:
            raise ValidationError(f"at most {MAX_RELAYS} relay addresses, not "
                                  f"{1 + len(self.relay_more)}")
        return self

    @property
    def relays(self) -> tuple[str, ...]:
        """Every relay address, first the preferred one."""
        return ((self.relay,) if self.relay is not None else ()) + self.relay_more


def load_settings(path: Path) -> Settings:
    """Settings from a TOML file (missing file: defaults)."""
    s = Settings()
    if not path.exists():
        return s
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ValidationError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(s, key)
        if key == "folder":
            if not isinstance(value, str):
                raise ValidationError(f"{path}: folder must be a string path")
            value = Path(value).expanduser()
        elif key in ("bind", "ice_servers", "relay_more"):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValidationError(f"{path}: {key} must be a list of strings")
            value = tuple(value)
        elif key == "relay":
            if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
                values["relay_more"] = tuple(value[1:])
                value = value[0]
            elif not isinstance(value, str):
                raise ValidationError(f"{path}: relay must be a URL string or a non-empty list "
                                      "of URL strings (instances of one relay, tried in order)")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValidationError(f"{path}: {key} must be true or false")
        elif isinstance(default, int | float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ValidationError(f"{path}: {key} must be a number")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValidationError(f"{path}: {key} must be a string")
        values[key] = value
    return replace(s, **values).check()
