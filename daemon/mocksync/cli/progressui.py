"""Progress for the CLI commands that wait (`status --wait`, `join`).

Why two renderings: on a terminal a person wants bars that move in place (rich); in a pipe,
a log or CI the same bars would be escape codes, so there it is plain lines, one each time
something changed, and nothing when nothing moves. `is_tty` picks; the decisions (what is
syncing, which lines to print, when waiting is over) are pure functions tested without a
daemon or a clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

#: Seconds between two looks at the daemon's status while waiting.
POLL_S = 0.5
#: Longest `--timeout` of a wait, in seconds.
MAX_WAIT_S = 24 * 3600


def syncing_items(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What a `status` document says is still being caught up: each with a label, done and
    total (total None when the daemon has no count, e.g. an environment merely `syncing`)."""
    items: dict[str, dict[str, Any]] = {}
    for p in doc.get("progress") or ():
        key = str(p.get("env") or p.get("space"))
        items[key] = {"key": key, "label": p.get("name") or p.get("env") or "an environment",
                      "done": int(p.get("done") or 0), "total": p.get("total")}
    for e in doc.get("environments") or ():
        if e.get("state") != "syncing" or e.get("uuid") in items:
            continue
        pr = e.get("progress") or {}
        items[str(e.get("uuid"))] = {"key": str(e.get("uuid")), "label": e.get("name") or e.get("file"),
                                     "done": int(pr.get("done") or 0), "total": pr.get("total")}
    return sorted(items.values(), key=lambda i: i["key"])


def caught_up(doc: Mapping[str, Any]) -> bool:
    """Nothing left to wait for: no pull in flight, no environment `syncing`."""
    return not syncing_items(doc)


def progress_lines(before: Mapping[str, tuple[int, Any]], items: list[dict[str, Any]]
                   ) -> tuple[list[str], dict[str, tuple[int, Any]]]:
    """Plain lines for what changed since `before` (key -> (done, total)), and the new memo."""
    lines, now = [], {}
    for it in items:
        now[it["key"]] = (it["done"], it["total"])
        if before.get(it["key"]) == now[it["key"]]:
            continue
        total = it["total"]
        count = f"{it['done']} of {total}" if total else f"{it['done']}"
        lines.append(f"syncing {it['label']}: {count} change sets")
    for key in before:
        if key not in now:
            lines.append(f"done {key}")
    return lines, now


class Reporter:
    """Shows `syncing_items` as they change: rich bars on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, is_tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty() if is_tty is None else is_tty
        self._memo: dict[str, tuple[int, Any]] = {}
        self._labels: dict[str, str] = {}
        self._totals: dict[str, int] = {}
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Reporter:
        if self.is_tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bars = Progress(TextColumn("syncing {task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("change sets"),
                                  console=Console(file=self.stream, force_terminal=True),
                                  transient=False)
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def show(self, items: list[dict[str, Any]]) -> None:
        if self._bars is None:
            lines, self._memo = progress_lines(self._memo, items)
            for it in items:
                self._labels[it["key"]] = str(it["label"])
            for line in lines:
                if line.startswith("done "):
                    line = f"done: {self._labels.get(line[5:], line[5:])}"
                print(line, file=self.stream, flush=True)
            return
        for it in items:
            task = self._tasks.get(it["key"])
            if task is None:
                task = self._tasks[it["key"]] = self._bars.add_task(str(it["label"]),
                                                                    total=it["total"])
            self._bars.update(task, completed=it["done"], total=it["total"])
        live = {it["key"] for it in items}
        for it in items:
            self._totals[it["key"]] = int(it["total"] or it["done"] or 1)
        for key, task in self._tasks.items():
            if key not in live:  # finished: show the bar full
                total = self._totals.get(key, 1)
                self._bars.update(task, completed=total, total=total)

    def note(self, text: str) -> None:
        """A free line of progress (e.g. `join`'s steps): printed above the bars."""
        if self._bars is not None:
            self._bars.console.print(text)
        else:
            print(text, file=self.stream, flush=True)


class Steps:
    """Steps of a wait with no count (`join`): a spinner naming the current step on a
    terminal (each finished step stays as a line), plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, is_tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty() if is_tty is None else is_tty
        self._console: Any = None
        self._status: Any = None

    def __enter__(self) -> Steps:
        if self.is_tty:
            from rich.console import Console

            self._console = Console(file=self.stream, force_terminal=True)
            self._status = self._console.status("starting")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def note(self, text: str) -> None:
        if self._status is None:
            print(text, file=self.stream, flush=True)
            return
        self._console.print(text, markup=False, highlight=False)
        self._status.update(text)


def wait_caught_up(fetch: Callable[[], dict[str, Any]], reporter: Reporter, timeout: float,
                   *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[bool, dict[str, Any]]:
    """Poll `fetch` (the daemon's status) until caught up or `timeout`; (done, last doc)."""
    deadline = clock() + timeout
    while True:
        doc = fetch()
        items = syncing_items(doc)
        reporter.show(items)
        if not items:
            return True, doc
        if clock() >= deadline:
            return False, doc
        sleep(POLL_S)


__all__ = ["MAX_WAIT_S", "POLL_S", "Reporter", "Steps", "caught_up", "progress_lines", "syncing_items",
           "wait_caught_up"]
