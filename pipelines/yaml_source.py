"""YAML loading that remembers where every value came from.

``yaml.safe_load`` forgets line numbers, so a spec error could not say "line 14". Here the document is
composed into nodes first (still safe: only plain YAML types, no tags that construct objects), then
turned into Python values while recording the position of every mapping key and value under its
field path. ``${env:VAR}`` and ``${env:VAR:-default}`` are substituted in string scalars.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipelines.errors import SpecError, SpecIssue

Path = tuple[Any, ...]  # field path: str keys and int list indices
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class SourceMap:
    """Field path → where its value (and, for mapping entries, its key) starts in the file."""

    file: str
    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    overridden: set[Path] = field(default_factory=set)  # paths set with --set on the command line

    def locate(self, path: Path, prefer_key: bool = False) -> Mark | None:
        """The closest recorded position: the path itself, else its nearest recorded ancestor."""
        probe = tuple(path)
        while True:
            if prefer_key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return None
            probe = probe[:-1]

    def issue(self, path: Path, message: str, prefer_key: bool = False) -> SpecIssue:
        if any(tuple(path[:n]) in self.overridden for n in range(len(path) + 1)):
            return SpecIssue("--set", None, None, format_path(path), message)
        mark = self.locate(path, prefer_key)
        return SpecIssue(self.file, mark.line if mark else None, mark.column if mark else None,
                         format_path(path), message)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_path(text: str) -> Path:
    """``steps[2].length_filter.min_chars`` or ``steps.2.length_filter.min_chars`` → a field path."""
    parts: list[Any] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        if token.startswith("["):
            parts.append(int(token[1:-1]))
        elif token.isdigit():
            parts.append(int(token))
        else:
            parts.append(token)
    if not parts:
        raise ValueError(f"empty field path in {text!r}")
    return tuple(parts)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str, env: dict[str, str]):
        self.source = SourceMap(file)
        self.env = env
        self.issues: list[SpecIssue] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.source.values[path] = _mark(node)
        if node.tag not in _PLAIN_TAGS:
            m = _mark(node)
            self.issues.append(SpecIssue(self.source.file, m.line, m.column, format_path(path),
                                         f"unsupported YAML tag {node.tag!r}: specs hold plain data only"))
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    self.issues.append(self.source.issue(path, f"mapping keys must be plain scalars, got {key!r}"))
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    m = _mark(key_node)
                    self.issues.append(SpecIssue(self.source.file, m.line, m.column,
                                                 format_path(path + (key,)), "duplicate key"))
                self.source.keys[path + (key,)] = _mark(key_node)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            value = self._substitute(value, path)
        return value

    def _substitute(self, text: str, path: Path) -> Any:
        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.issues.append(self.source.issue(path, f"environment variable {name} is not set "
                                                       f"(write ${{env:{name}:-default}} to give a default)"))
            return ""

        replaced = _ENV.sub(replace, text)
        # A value that is exactly one ${env:...} is re-read as YAML so `${env:WORKERS}` can be a number.
        if replaced != text and _ENV.fullmatch(text):
            try:
                return yaml.safe_load(replaced) if replaced.strip() else replaced
            except yaml.YAMLError:
                return replaced
        return replaced


def load_yaml(text: str, file: str, env: dict[str, str] | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain Python values plus a :class:`SourceMap`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        if "'\\t'" in problem:  # PyYAML's own words ("found character '\t' that cannot start any token") hide the fix
            problem += " (a tab: YAML indents with spaces only)"
        raise SpecError([SpecIssue(file, line, col, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue(file, None, None, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        raise SpecError([SpecIssue(file, 1, 1, "", "the spec is empty")])
    builder = _Builder(file, dict(os.environ) if env is None else env)
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise SpecError([SpecIssue(file, mark.line + 1 if mark else None, mark.column + 1 if mark else None,
                                   "", f"unsupported YAML: {exc.problem}")]) from None
    if builder.issues:
        raise SpecError(builder.issues)
    return data, builder.source


def apply_overrides(data: Any, overrides: list[str], source: SourceMap) -> Any:
    """Apply ``--set a.b=c`` overrides. The value is read as YAML (``3`` → int, ``[en, de]`` → list),
    then typed by the spec model when the spec is validated."""
    issues = []
    for item in overrides:
        if "=" not in item:
            issues.append(SpecIssue("--set", None, None, item, "expected KEY=VALUE, e.g. steps[1].length_filter.min_chars=100"))
            continue
        key, raw = item.split("=", 1)
        try:
            path = parse_path(key.strip())
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (ValueError, yaml.YAMLError) as exc:
            issues.append(SpecIssue("--set", None, None, key, f"cannot parse: {exc}"))
            continue
        target = data
        for depth, part in enumerate(path[:-1]):
            nxt = path[depth + 1]
            if isinstance(part, int):
                if not isinstance(target, list) or part >= len(target):
                    issues.append(SpecIssue("--set", None, None, key, f"{format_path(path[:depth + 1])} does not exist"))
                    break
                target = target[part]
            else:
                if not isinstance(target, dict):
                    issues.append(SpecIssue("--set", None, None, key, f"{format_path(path[:depth])} is not a mapping"))
                    break
                if part not in target:
                    target[part] = [] if isinstance(nxt, int) else {}
                target = target[part]
        else:
            last = path[-1]
            if isinstance(last, int):
                if not isinstance(target, list) or last > len(target):
                    issues.append(SpecIssue("--set", None, None, key, f"{format_path(path)} does not exist"))
                    continue
                if last == len(target):
                    target.append(value)
                else:
                    target[last] = value
            elif isinstance(target, dict):
                target[last] = value
            else:
                issues.append(SpecIssue("--set", None, None, key, f"{format_path(path[:-1])} is not a mapping"))
                continue
            # Errors in an overridden value point at the command line, not the file.
            for p in [k for k in source.values if k[: len(path)] == path]:
                del source.values[p]
            source.keys.pop(path, None)
            source.overridden.add(path)
    if issues:
        raise SpecError(issues)
    return data
