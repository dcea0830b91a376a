"""Is this text an environment we can sync? Parse, check, and say exactly why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import MOCKOON_MAX_MIGRATION
from ..errors import ValidationError
from .errors import MigrationTooNewError, NotAnEnvironmentError
from .flatten import EntityView, flatten
from .jsfmt import Layout, detect_layout, gc_paused, parse_json
from .reparse import EnvSpans, reparse

#: Largest environment file we accept (Mockoon's biggest plan allows 15 MB; leave headroom).
MAX_ENV_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ParsedEnv:
    doc: dict[str, Any]
    layout: Layout
    text: str
    #: The entity views validation computed: pass them to `diff` to skip a second flatten.
    views: dict[str, EntityView] | None = None
    #: Where each entity's text lies (`reparse.EnvSpans`), once a save was parsed against
    #: this version: the next save's parse starts from it.
    spans: EnvSpans | None = None

    @property
    def uuid(self) -> str:
        return self.doc["uuid"]

    @property
    def name(self) -> str:
        n = self.doc.get("name")
        return n if isinstance(n, str) else ""


def check_env(doc: Any, max_migration: int = MOCKOON_MAX_MIGRATION) -> dict[str, EntityView]:
    """Raise a ValidationError naming the first problem, or return the entity views."""
    if not isinstance(doc, dict):
        raise NotAnEnvironmentError("the top level is not an object")
    if "uuid" not in doc:
        raise NotAnEnvironmentError("no 'uuid' at the top level")
    lm = doc.get("lastMigration")
    if isinstance(lm, bool) or not isinstance(lm, int):
        raise NotAnEnvironmentError("no integer 'lastMigration' at the top level")
    if lm > max_migration:
        raise MigrationTooNewError(lm, max_migration)
    return flatten(doc)


def parse_env(text: str | bytes, max_migration: int = MOCKOON_MAX_MIGRATION,
              previous: ParsedEnv | None = None) -> ParsedEnv:
    """Parse and validate an environment file's text.

    `previous`: the file's last version, parsed (the daemon keeps it per file). A save that
    changed one entity is then parsed as that entity only (`reparse`: a one-property save of
    a 15 MB environment costs a text comparison, not a parse); the result is the same.
    """
    if len(text) > MAX_ENV_FILE_BYTES:
        raise ValidationError(
            f"file is {len(text)} bytes, over the {MAX_ENV_FILE_BYTES} byte limit for an environment"
        )
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"file is not UTF-8 text (byte {exc.start})") from None
    if previous is not None and previous.views is not None:
        got = _parse_since(previous, text, max_migration)
        if got is not None:
            return got
    doc = parse_json(text)
    with gc_paused():
        views = check_env(doc, max_migration)
    return ParsedEnv(doc, detect_layout(text), text, views)


def _parse_since(previous: ParsedEnv, text: str, max_migration: int) -> ParsedEnv | None:
    """`text` parsed from `previous` (see `reparse`), or None: parse it whole."""
    old = previous.text
    bom = "\ufeff" if old.startswith("\ufeff") else ""
    if text.startswith("\ufeff") != bool(bom) or previous.views is None:
        return None
    got = reparse(old[len(bom):], text[len(bom):], previous.doc, previous.views,
                  previous.spans)
    if got is None:
        return None
    lm = got.doc.get("lastMigration")
    if isinstance(lm, int) and lm > max_migration:
        raise MigrationTooNewError(lm, max_migration)
    newline = None if got.breaks_changed else previous.layout.newline
    return ParsedEnv(got.doc, detect_layout(text, newline), text, got.views, got.spans)
