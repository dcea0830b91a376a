"""The Mockoon environment model: JSON <-> registers, diff, merge, render (pure).

Typical use:
    parsed = parse_env(text)                      # validate, keep the file's layout
    state = state_from_doc(parsed.doc)            # or load from the store
    ops = diff(render(state), edited_doc, state)  # minimal ops for an edit
    state.apply(validate_ops(wire_ops), stamp, origin, deps)
    text = dumps(render(state), parsed.layout)
"""

from .diff import diff, registers_of, same, snapshot_ops, state_from_doc
from .errors import (
    BadOpError,
    DuplicateUuidError,
    JSONSyntaxError,
    MigrationTooNewError,
    NotAnEnvironmentError,
)
from .flatten import EntityView, flatten
from .jsfmt import COMPACT_LAYOUT, MOCKOON_LAYOUT, Layout, detect_layout, dumps
from .merge import MergeResult, describe, describe_entity, merge3
from .ops import Create, Delete, Op, Set, Unset, as_op, to_wire, validate_ops
from .render import render, render_text
from .state import ABSENT, ApplyResult, Conflict, Entity, State, happened_before
from .validate import MAX_ENV_FILE_BYTES, ParsedEnv, check_env, parse_env

__all__ = [
    "ABSENT", "ApplyResult", "BadOpError", "COMPACT_LAYOUT", "Conflict", "DuplicateUuidError",
    "Entity", "EntityView", "JSONSyntaxError", "Layout", "MAX_ENV_FILE_BYTES", "MOCKOON_LAYOUT",
    "MigrationTooNewError", "NotAnEnvironmentError", "ParsedEnv", "State", "check_env",
    "detect_layout", "diff", "dumps", "flatten", "happened_before", "parse_env", "registers_of",
    "render", "render_text", "same", "snapshot_ops", "state_from_doc", "to_wire", "validate_ops",
    "MergeResult", "describe", "describe_entity", "merge3",
    "Create", "Delete", "Op", "Set", "Unset", "as_op",
]
