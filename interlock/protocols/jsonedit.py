"""A parsed JSON document changed at a path (`core.views.JsonPath`, as `TextSlot.path` and
`StreamText.path` give it): in place, or copy on write where the document is shared (a response
view's message, a stream event's JSON, which every stage reads)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interlock.core.views import JsonPath


def set_path(document: Any, path: JsonPath, value: Any) -> None:
    """Set `document[p0][p1]...` to `value`."""
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def with_path(document: Any, path: JsonPath, value: Any) -> Any:
    """`document` with `document[p0][p1]...` set to `value`, leaving `document` as it was: the
    containers along the path are copied, the rest shared (a stream event's parsed JSON is shared by
    every stage that reads it, `Event.json`)."""
    root = target = document.copy()
    for key in path[:-1]:
        child = target[key].copy()
        target[key] = child
        target = child
    target[path[-1]] = value
    return root


def with_paths(document: Any, changes: Iterable[tuple[JsonPath, Any]]) -> Any:
    """`document` with each (path, value) of `changes` set, leaving `document` as it was: each
    container along the paths is copied once (however many changes pass through it), the rest
    shared. `document` itself when there are no changes."""
    mine: dict[int, Any] = {}  # id of a container met on the way (an original or a copy) -> the copy

    def own(container: Any) -> Any:
        copied = mine.get(id(container))
        if copied is None:
            copied = container.copy()
            mine[id(container)] = mine[id(copied)] = copied  # both stay alive here: their ids stay theirs
        return copied

    root = document
    for path, value in changes:
        root = target = own(root)
        for key in path[:-1]:
            child = own(target[key])
            target[key] = child
            target = child
        target[path[-1]] = value
    return root
