"""YAML loading that remembers where every value came from.

``yaml.safe_load`` forgets line numbers, so a spec error could not say "line 14". Here the document is
composed into nodes first (still safe: only plain YAML types, no tags that construct objects), then
turned into Python values while recording the position of every mapping key and value under its
field path. ``${env:VAR}`` and ``${env:VAR:-default}`` are substituted in string scalars.

A spec is refused, with the position and the limit, before it can cost much time or memory: larger
than ``MAX_SPEC_BYTES``, nested deeper than ``MAX_DEPTH``, or holding more than ``MAX_NODES`` values
once its aliases are expanded (a kilobyte of nested aliases, a "billion laughs", expands to billions).
The same limits apply to ``--set`` values and to ``${env:...}`` values read as YAML.
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

# Far above real specs (the biggest shipped one, specs/demo.yaml: 8 KB, 293 values, 9 levels) and low
# enough that reaching any of them costs at most a few seconds of parsing and tens of MB.
MAX_SPEC_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64  # nested collections (and the value inside the innermost one)
MAX_NODES = 100_000  # values, keys included, counting an alias as every value it repeats
_TOO_DEEP = f"nesting deeper than {MAX_DEPTH} levels (the limit for a spec)"
_TOO_BIG = f"larger than {MAX_SPEC_BYTES >> 20} MiB (the limit for a spec)"


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


class SpecLimitExceeded(Exception):
    """A spec limit was exceeded (or, for a recursive alias, would be without end) at ``mark``, a
    PyYAML mark (0-based line and column)."""

    def __init__(self, message: str, mark: Any):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with the limits checked as each node is composed.

    Composing is cheap even for an alias bomb (an alias is composed as the anchored node itself,
    shared); the blow-up comes when the nodes become Python values, every alias copied out. So each
    alias counts as the expanded size of its anchored node, and the bomb is refused at the alias that
    crosses ``MAX_NODES``, before anything is expanded. The depth check also keeps the composer's
    recursion (one Python frame per level) far from the interpreter's limit.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # values so far, with every alias expanded
        self._anchored: dict[str, int] = {}  # anchor → expanded size of its node
        self._open: set[str] = set()  # anchors whose node is still being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:  # `&a [*a]` would make a value that contains itself
                raise SpecLimitExceeded(f"alias *{event.anchor} is used inside the value it names (a recursive value)",
                                   event.start_mark)
            self._count(self._anchored.get(event.anchor, 1), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise SpecLimitExceeded(_TOO_DEEP, event.start_mark)
        before = self._expanded
        self._count(1, event.start_mark)
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        if event.anchor is not None:  # PyYAML refuses a duplicate anchor, so the name is unique
            self._open.discard(event.anchor)
            self._anchored[event.anchor] = self._expanded - before
        self._depth -= 1
        return node

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner looks ahead up to 1,024 characters for a possible key at every open `[` / `{`,
        # so a line of thousands of them is quadratic before the composer sees the first node.
        if self.flow_level >= MAX_DEPTH:
            raise SpecLimitExceeded(_TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _count(self, n: int, mark: Any) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            raise SpecLimitExceeded(f"more than {MAX_NODES:,} values once aliases are expanded (the limit for a "
                               "spec; an alias counts as every value it repeats)", mark)


def compose_bounded(text: str) -> yaml.Node | None:
    """``yaml.compose`` under the spec limits; raises :class:`SpecLimitExceeded` or a ``yaml.YAMLError``."""
    if len(text) > MAX_SPEC_BYTES:  # characters, a cheap lower bound of the bytes
        raise SpecLimitExceeded(_TOO_BIG, _offset_mark(text))
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def load_value(text: str) -> Any:
    """One YAML value from the command line or the environment, under the same limits as a spec."""
    node = compose_bounded(text)
    return None if node is None else yaml.constructor.SafeConstructor().construct_document(node)


def read_spec_text(file: str) -> str:
    """The spec file's text; a file over ``MAX_SPEC_BYTES`` is refused without reading the rest of it.
    Raises ``OSError`` and ``UnicodeDecodeError`` as reading does."""
    with open(file, "rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        mark = _offset_mark(data[:MAX_SPEC_BYTES].decode("utf-8", errors="ignore"))
        raise SpecError([SpecIssue(file, mark.line + 1, mark.column + 1, "",
                                   f"refused: {_TOO_BIG}; long lists belong in files the spec names "
                                   "(seeds_file, globs in paths)")])
    return data.decode("utf-8")


def _offset_mark(head: str) -> Any:
    """Where the text goes past the size limit, as a 0-based mark."""
    head = head[:MAX_SPEC_BYTES]
    return yaml.Mark("", len(head), head.count("\n"), len(head) - head.rfind("\n") - 1, None, None)


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
                return load_value(replaced) if replaced.strip() else replaced
            except SpecLimitExceeded as exc:
                self.issues.append(self.source.issue(path, f"the value of {text} is refused: {_where_in_value(exc)}"))
                return None
            except yaml.YAMLError:
                return replaced
        return replaced


def load_yaml(text: str, file: str, env: dict[str, str] | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain Python values plus a :class:`SourceMap`."""
    try:
        node = compose_bounded(text)
    except SpecLimitExceeded as exc:
        raise SpecError([SpecIssue(file, exc.mark.line + 1, exc.mark.column + 1, "",
                                   f"refused: {exc.message}")]) from None
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
            value = load_value(raw) if raw.strip() else ""
        except SpecLimitExceeded as exc:
            issues.append(SpecIssue("--set", None, None, key, f"refused: {_where_in_value(exc)}"))
            continue
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


def _where_in_value(exc: SpecLimitExceeded) -> str:
    return f"{exc.message}, at line {exc.mark.line + 1}, column {exc.mark.column + 1} of the value"
