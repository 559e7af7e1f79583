"""YAML loading that remembers where every value came from, so errors can say `file:line:col`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Location = tuple[int, int]  # 1-based line and column
Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SourceError(Exception):
    """A problem in a config or policy file, located at `file:line:col`."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file, self.line, self.col, self.message = file, line, col, message


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML document plus the location of every mapping key and value in it."""

    file: str
    data: Any
    locations: dict[Path_, Location]

    def locate(self, path: Path_) -> Location:
        """The location of `path`, or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.locations:
                return self.locations[path]
            path = path[:-1]
        return self.locations.get((), (1, 1))

    def error(self, path: Path_, message: str) -> SourceError:
        line, col = self.locate(path)
        return SourceError(self.file, line, col, message)


class _Loader(yaml.SafeLoader):
    pass


def _walk(node: yaml.Node, path: Path_, locations: dict[Path_, Location]) -> Any:
    locations[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _Loader.construct_object(_LOADER, key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise _located(key_node, "a mapping key must be a plain value")
            if key in out:
                raise _located(key_node, f"duplicate key {key!r}")
            out[key] = _walk(value_node, (*path, key), locations)
            # A key's own position is more useful than its value's for "unknown field" errors.
            locations[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), locations) for i, item in enumerate(node.value)]
    return _Loader.construct_object(_LOADER, node, deep=True)


class _Located(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def _located(node: yaml.Node, message: str) -> _Located:
    return _Located(node.start_mark.line + 1, node.start_mark.column + 1, message)


_LOADER = _Loader("")


def parse_yaml(text: str, file: str = "<string>", expand_env: bool = False) -> Document:
    """Parse one YAML document; with `expand_env`, `${VAR}` and `${VAR:-default}` in strings are expanded."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SourceError(file, line, col, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, 1, 1, f"invalid YAML: {exc}") from None
    locations: dict[Path_, Location] = {}
    if node is None:
        return Document(file, None, {(): (1, 1)})
    try:
        data = _walk(node, (), locations)
    except _Located as exc:
        raise SourceError(file, exc.line, exc.col, exc.message) from None
    except yaml.YAMLError as exc:
        raise SourceError(file, 1, 1, f"invalid YAML: {exc}") from None
    document = Document(file, data, locations)
    if expand_env:
        document = Document(file, _expand(data, (), document), locations)
    return document


def load_yaml(path: str | os.PathLike[str], expand_env: bool = False) -> Document:
    """Read and parse a YAML file; unreadable files are reported as `file:1:1` errors."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(name, 1, 1, f"cannot read: {exc}") from None
    return parse_yaml(text, name, expand_env)


def _expand(value: Any, path: Path_, document: Document) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k), document) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i), document) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise document.error(path, f"environment variable {name} is not set (use ${{{name}:-default}})")

        expanded = _ENV.sub(substitute, value)
        left = _ENV.sub("", value)  # what is not a well-formed ${VAR} / ${VAR:-default}
        if "${" in left:
            bad = left[left.index("${") :].split()[0]
            raise document.error(
                path, f"malformed environment reference {bad!r}: write ${{NAME}} or ${{NAME:-default}}"
            )
        return expanded
    return value
