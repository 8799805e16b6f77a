"""YAML text to plain JSON-like values, keeping the node tree to find the line of any field.

libyaml composes the nodes (fast, and it keeps marks); a small walk turns them
into values and refuses what JSON cannot hold or what would hurt: duplicate or
non-string keys, merge keys, custom tags, NaN, too deep or alias-multiplied
documents (YAML bombs).

No message quotes the source: a key pasted by mistake can be a mapping key
(then duplicated), a tag (``!sk-...``), an anchor or alias name, and errors
reach terminals, CI logs and JSON reports. Messages name the problem and the
line; the parser's own wording is kept only with anything quoted in it removed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import yaml

from controller.core import credentials, validation

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000  # per document, counting every alias expansion
MAX_DEPTH = 64

_SCALARS = yaml.SafeLoader.yaml_constructors


class _CachingResolver(yaml.resolver.Resolver):
    """libyaml parses in C but asks Python to resolve every scalar's tag by
    regular expressions; declarations repeat the same few scalars (apiVersion,
    kind, plan names, keys), so the answers are memoised."""

    _cache: ClassVar[dict[tuple[str, bool, bool], Any]] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        resolve = super().resolve
        if kind is not yaml.ScalarNode or not isinstance(value, str) or len(value) > 64:
            return resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        key = (value, implicit[0], implicit[1])
        tag = self._cache.get(key)
        if tag is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            tag = self._cache[key] = resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Loader(CParser, yaml.constructor.SafeConstructor, _CachingResolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            _CachingResolver.__init__(self)

else:  # pragma: no cover - PyYAML wheels ship libyaml
    _Loader = yaml.SafeLoader  # type: ignore[misc, assignment]
_constructor = yaml.SafeLoader("")  # only its scalar constructors are used; they keep no state


class DocumentError(Exception):
    """A YAML problem at a line (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclasses.dataclass(frozen=True)
class Document:
    index: int  # position in the file, from 0
    line: int  # first line of the document
    body: Any  # the value
    node: yaml.Node | None = None  # kept only when asked: trees cost far more memory than values

    def line_of(self, path: validation.Path) -> int:
        """The line of the deepest node along ``path`` (the offending value, or its closest parent)."""
        node, line = self.node, self.line
        for part in path:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if k.value == part), None)
                if match is None:
                    break
                node = match
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                node = node.value[part]
            else:
                break
            line = node.start_mark.line + 1
        return line


def parse(text: str, keep_nodes: bool = False) -> list[Document]:
    """Every document of a YAML stream but the empty ones, as kubectl skips them.

    Raises ``DocumentError`` at the first problem.
    """
    if len(text) > MAX_FILE_BYTES:
        raise DocumentError(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", 1)
    _check_flow_depth(text)
    out: list[Document] = []
    try:
        for index, node in enumerate(_compose_all(text)):
            if node is None or _is_null(node):
                continue
            walk = _Walk()
            body = walk.value(node, 0)
            out.append(
                Document(index, node.start_mark.line + 1, body, node if keep_nodes else None)
            )
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = _unquoted("; ".join(filter(None, (e.context, e.problem))))
        raise DocumentError(f"invalid YAML: {problem}", mark.line + 1 if mark else 1) from None
    except yaml.YAMLError as e:  # reader errors: bad encoding, control characters
        raise DocumentError(f"invalid YAML: {_reader_problem(e)}", _reader_line(text, e)) from None
    except RecursionError:
        raise DocumentError(f"document nests deeper than {MAX_DEPTH} levels", 1) from None
    return out


# libyaml composes nodes recursively in C: tens of thousands of nested flow
# collections ([[[[... in a 4 MiB file) overflow the C stack and kill the
# process (SIGSEGV) before _Walk can count the depth. Block nesting is bounded
# by indentation (a 4 MiB file holds fewer than 3,000 levels); flow nesting is
# bounded here, before libyaml sees the text, by an upper bound of the depth
# (brackets inside strings count too, so the bound is far above MAX_DEPTH).
_MAX_FLOW_BRACKETS = 1_000
_BRACKETS = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= _MAX_FLOW_BRACKETS:
        return
    depth = 0
    for m in _BRACKETS.finditer(text):
        if m.group() in "[{":
            depth += 1
            if depth > _MAX_FLOW_BRACKETS:
                line = text.count("\n", 0, m.start()) + 1
                raise DocumentError(f"document nests deeper than {MAX_DEPTH} levels", line)
        elif depth:
            depth -= 1


def _is_null(node: yaml.Node) -> bool:
    """An empty document (a trailing ``---``, generators emit one) or a ``null`` one: kubectl
    (``apply -f``) skips both, so the same files must mean the same objects here. The index of
    the documents after it is kept (their position in the file)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


_NULL_TAG = "tag:yaml.org,2002:null"


@functools.lru_cache(maxsize=32)
def with_nodes(text: str) -> tuple[Document, ...]:
    """The documents of ``text`` with their node trees, to find lines for findings."""
    return tuple(parse(text, keep_nodes=True))


def _compose_all(text: str) -> Iterator[yaml.Node | None]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


def _reader_problem(error: yaml.YAMLError) -> str:
    reason = getattr(error, "reason", None)
    return _unquoted(str(reason)) if reason else "unreadable characters"


# What the parser quotes (an alias name, a tag handle): dropped, but for one or
# two characters of YAML syntax ("expected ',' or ']'"). libyaml's own messages
# are fixed strings; PyYAML's pure-Python parser, the fallback, quotes the
# source in several ('found undefined alias %r').
_QUOTED = re.compile(r"""(?<![^\s(])(?:'[^']{3,}'|"[^"]{3,}"|`[^`]{3,}`|\S*[!&*]\S{2,})""")


def _unquoted(problem: str) -> str:
    """The parser's problem without any part of the source it may quote."""
    text = " ".join(_QUOTED.sub("", problem).split()).strip(" ;:,")
    if not text or credentials.looks_like_key_value(text) or len(text) > 120:
        return "the text here is not valid YAML"
    return text


def _reader_line(text: str, error: yaml.YAMLError) -> int:
    position = getattr(error, "position", None)
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


class _Walk:
    def __init__(self) -> None:
        self.nodes = 0

    def value(self, node: yaml.Node, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DocumentError(
                f"document has more than {MAX_NODES} values (counting alias expansions)",
                node.start_mark.line + 1,
            )
        if depth > MAX_DEPTH:
            raise DocumentError(
                f"document nests deeper than {MAX_DEPTH} levels", node.start_mark.line + 1
            )
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, depth + 1) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth)
        raise DocumentError("unsupported YAML node", node.start_mark.line + 1)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise DocumentError("merge keys (<<) are not supported; write the fields out", line)
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise DocumentError(
                    "mapping keys must be strings (quote keys such as yes, on, 1)", line
                )
            if key in out:
                # The key itself is not quoted: it may be a secret pasted by mistake.
                raise DocumentError(
                    f"duplicate key: the same key is already set at line {lines[key]} "
                    "of this mapping",
                    line,
                )
            lines[key] = line
            out[key] = self.value(value_node, depth + 1)
        return out


# The tags a scalar may carry (implicitly, or spelled out as ``!!int``), and what
# a value that does not fit its tag is called.
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:int": "integer",
    "tag:yaml.org,2002:float": "number",
}
_YAML_TAG = "tag:yaml.org,2002:"


def _scalar(node: yaml.ScalarNode) -> Any:
    line = node.start_mark.line + 1
    if node.tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:str"):
        # Dates stay strings: JSON has no date type.
        return node.value
    what = _SCALAR_TAGS.get(node.tag)
    if what is None:
        raise DocumentError(_unsupported_tag(node.tag), line)
    try:
        value = _SCALARS[node.tag](_constructor, node)
    except (ValueError, KeyError, TypeError, OverflowError):
        # ValueError: an integer of more than 4,300 digits (sys.get_int_max_str_digits),
        # or ``!!int``/``!!bool`` on text that is none; the text is not quoted.
        if what == "integer" and len(node.value) > 4_000:
            raise DocumentError("number is too large", line) from None
        raise DocumentError(f"value is not a valid {what}", line) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError("NaN and Infinity are not allowed (JSON cannot hold them)", line)
    return value


def _unsupported_tag(tag: str) -> str:
    """Names the standard YAML types (``!!binary``, ``!!set``); a custom tag is not quoted:
    ``!sk-...`` is a key pasted where a tag goes."""
    name = tag.removeprefix(_YAML_TAG)
    if tag.startswith(_YAML_TAG) and name in _STANDARD_TYPES:
        return f"unsupported YAML tag !!{name}; write plain values"
    return "unsupported YAML tag (custom and language-specific tags are not allowed)"


_STANDARD_TYPES = frozenset(
    {"binary", "set", "omap", "pairs", "merge", "value", "yaml", "seq", "map", "timestamp"}
)
