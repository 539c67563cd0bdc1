"""YAML that remembers line numbers, so every bad-input message can name file:line.

Mappings load as :class:`Mapping` (a ``dict``) and sequences as :class:`Sequence`
(a ``list``); both carry the line of each entry. Scalars stay plain Python values, but a
mapping remembers the text of every value YAML 1.1 read as a boolean (``off``, ``no``,
``yes``, ``on``...), so :meth:`Where.require_str` can say why ``mode: off`` is not a string.

It is also the one place input size is bounded, so a hostile or careless file ends in a
one-line ``ConfigError`` rather than a hang or a traceback: at most :data:`MAX_FILE_BYTES`
of UTF-8, :data:`MAX_DEPTH` levels of nesting, :data:`MAX_SCALAR` characters in one value,
and no aliases (``*name``), which no evac file needs and which make a 700-byte "billion
laughs" file expand exponentially.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, overload

import yaml

from .errors import ConfigError

MAX_FILE_BYTES = 1024 * 1024  # 1 MiB: a 1,000-host inventory is about 200 KiB
MAX_DEPTH = 64  # mappings and lists inside each other; evac's files use fewer than 10
MAX_SCALAR = 64 * 1024  # characters in one key or value (a long template or message)


class Mapping(dict[str, Any]):
    line: int = 0
    lines: dict[str, int] = {}  # noqa: RUF012 - replaced per instance by the loader
    bool_texts: dict[str, str] = {}  # noqa: RUF012 - key -> the text YAML read as a boolean

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)

    def bool_text(self, key: str) -> str | None:
        """The original text of ``key``'s value when YAML read it as a boolean (``off``), else None."""
        return self.bool_texts.get(key)


class Sequence(list[Any]):
    line: int = 0
    lines: list[int] = []  # noqa: RUF012 - replaced per instance by the loader

    def line_of(self, index: int) -> int:
        return self.lines[index] if index < len(self.lines) else self.line


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the limits above; the limits are checked while composing,
    before anything is built, so nothing grows past them."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0

    def _refuse(self, mark: Any, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{mark.line + 1}: {message}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(event.start_mark, f"YAML aliases (*{event.anchor}) are not allowed; write the value out")
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR:
            raise self._refuse(
                event.start_mark, f"a value of {len(event.value):,} characters; at most {MAX_SCALAR:,} are allowed"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            if self.depth >= MAX_DEPTH:
                raise self._refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError, AttributeError, IndexError) as exc:
            # A scalar YAML resolved to a type Python cannot build: an integer of 5,000
            # digits, a date like 2024-13-45, an empty ``!!int``, a ``!!timestamp`` no date.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from None


BOOL_TAG = "tag:yaml.org,2002:bool"


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.line = node.start_mark.line + 1
    result.lines = {}
    result.bool_texts = {}
    for key_node, value_node in node.value:
        # Keys are names: take their text, so YAML 1.1 never turns "on" or "yes" into True.
        if isinstance(key_node, yaml.ScalarNode):
            key = key_node.value
        else:
            key = str(loader.construct_object(key_node, deep=True))
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode) and value_node.tag == BOOL_TAG:
            result.bool_texts[key] = value_node.value
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    result = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_text(text: str, source: str) -> Any:
    """Parse YAML text; every problem becomes a one-line ``ConfigError`` naming file:line."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; at most {MAX_FILE_BYTES:,} are allowed")
    try:
        loader = _Loader(text, source)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{source}:{line}: invalid YAML: character #x{exc.character:04x} is not allowed") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(str(exc.problem or exc).split())
        raise ConfigError(f"{source}:{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # the limits above keep nesting shallow; this is the backstop
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None


def load_file(path: Path | str) -> Any:
    """Read and parse a YAML file: at most :data:`MAX_FILE_BYTES` bytes of UTF-8."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; evac reads files up to 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 at byte {exc.start}") from None
    return load_text(text, str(path))


class Where:
    """Builds error messages for one file: ``Where(src).error(line, field, text)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, line: int, field: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: {field}: {message}")

    def require_mapping(self, value: Any, line: int, field: str) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.error(line, field, f"expected a mapping, got {_kind(value)}")
        return value

    def require_sequence(self, value: Any, line: int, field: str) -> Sequence:
        if not isinstance(value, Sequence):
            raise self.error(line, field, f"expected a list, got {_kind(value)}")
        return value

    @overload
    def require_str(self, data: Mapping, key: str, field: str, default: str) -> str: ...

    @overload
    def require_str(self, data: Mapping, key: str, field: str, default: None = None) -> str | None: ...

    def require_str(self, data: Mapping, key: str, field: str, default: str | None = None) -> str | None:
        """``data[key]`` as a string (``default`` when absent); an error naming file:line and
        ``field`` otherwise. A YAML 1.1 boolean gets the fix in the message::

            evac.yaml:12: slack.mode: expected a string; YAML reads off as false — quote it: "off"
        """
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, str):
            return value
        text = data.bool_text(key)
        if isinstance(value, bool) and text is not None:
            reads = "true" if value else "false"
            raise self.error(
                data.line_of(key), field, f'expected a string; YAML reads {text} as {reads} — quote it: "{text}"'
            )
        raise self.error(data.line_of(key), field, f"expected a string, got {_kind(value)}")

    def reject_unknown(self, data: Mapping, allowed: Iterable[str], field: str) -> None:
        allowed = list(allowed)
        for key in data:
            if key not in allowed:
                hint = suggest(key, allowed) if isinstance(key, str) else ""
                shown = key if isinstance(key, str) and key.isprintable() else repr(key)  # one line, always
                raise self.error(data.line_of(key), f"{field}{shown}", f"unknown field{hint}")


def section_mapping(data: Any, source: str, name: str) -> Mapping:
    """A plugin's top-level section of ``evac.yaml`` as a mapping (empty when absent); an
    error at the section's own line when it is something else, which carries no line."""
    if data is None:
        return Mapping()
    if not isinstance(data, Mapping):
        try:
            document = load_file(source)
        except ConfigError:
            document = None
        line = document.line_of(name) if isinstance(document, Mapping) else 0
        raise Where(source).error(line, name, f"expected a mapping, got {type(data).__name__} {shown(data)}")
    return data


def seconds(value: Any, most: float, note: str = "") -> float:
    """A duration from YAML: a finite number above 0 and at most ``most``; a ``ValueError``
    saying what was expected (``note`` explains the limit), for the caller to place."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= most
    ):
        raise ValueError(f"expected seconds > 0 and at most {most:g}{note}, got {shown(value)}")
    return float(value)


def suggest(word: str, choices: Iterable[str]) -> str:
    """A ``(did you mean 'x'?)`` suffix for typos, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` (one line, whatever it holds) cut to ``limit`` characters, so a huge
    value a user gave cannot flood the message that quotes it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
