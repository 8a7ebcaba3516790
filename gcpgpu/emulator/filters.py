"""The list ``filter`` expressions Compute Engine accepts, evaluated against resource JSON.

Supported:  ``field = value``, ``field != value``, ``field : value`` (``:*`` tests presence),
``field eq regex`` / ``field ne regex`` (full-match regular expressions), dotted fields such as
``labels.gcpgpu-cluster`` or ``scheduling.preemptible``, quoted or bare values, ``NOT``, and
conjunctions ``(a) (b)`` / ``a AND b`` and ``OR``.  Like AIP-160, OR binds tighter than AND.

A value compared with a URL field (zone, machineType, ...) also matches the URL's last segment,
so ``zone = us-central1-a`` works as users expect.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable

from .errors import invalid

Predicate = Callable[[dict], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>!=|=|:|\beq\b|\bne\b) |
        "(?P<dq>(?:[^"\\]|\\.)*)" | '(?P<sq>(?:[^'\\]|\\.)*)' |
        (?P<word>[^\s()=!:"']+)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise invalid(f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind in ("dq", "sq"):
            kind, value = "string", re.sub(r"\\(.)", r"\1", value)
        elif kind == "word" and value.upper() in ("AND", "OR", "NOT"):
            kind, value = value.upper(), value.upper()
        tokens.append((kind, value))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self):
        raise invalid(f"Invalid value for field 'filter': '{self.text}'. Invalid list filter expression.")

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None) -> str:
        if self.pos >= len(self.tokens) or (kind and self.tokens[self.pos][0] != kind):
            self.fail()
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def parse(self) -> Predicate:
        predicate = self.expression()
        if self.peek() is not None:
            self.fail()
        return predicate

    def expression(self) -> Predicate:  # sequence { AND sequence }, adjacency also means AND
        parts = [self.disjunction()]
        while self.peek() not in (None, "rparen"):
            if self.peek() == "AND":
                self.take()
            parts.append(self.disjunction())
        return lambda item: all(p(item) for p in parts)

    def disjunction(self) -> Predicate:
        parts = [self.factor()]
        while self.peek() == "OR":
            self.take()
            parts.append(self.factor())
        return lambda item: any(p(item) for p in parts)

    def factor(self) -> Predicate:
        if self.peek() == "NOT":
            self.take()
            inner = self.factor()
            return lambda item: not inner(item)
        if self.peek() == "lparen":
            self.take()
            inner = self.expression()
            self.take("rparen")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field = self.take("word")
        op = self.take("op")
        if self.peek() not in ("word", "string"):
            self.fail()
        value = self.take()
        return _comparison(field, op, value)


def _lookup(item: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(item, dict) or part not in item:
            return None
        item = item[part]
    return item


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _equals(actual: Any, expected: str) -> bool:
    if actual is None:
        return False
    if isinstance(actual, list):
        return any(_equals(a, expected) for a in actual)
    text = _as_text(actual)
    if text == expected or ("*" in expected and fnmatch.fnmatchcase(text, expected)):
        return True
    return "/" in text and text.rsplit("/", 1)[1] == expected


def _comparison(field: str, op: str, value: str) -> Predicate:
    if op in ("eq", "ne"):
        pattern = re.compile(value)

        def regex_match(item: dict) -> bool:
            actual = _lookup(item, field)
            return actual is not None and pattern.fullmatch(_as_text(actual)) is not None

        return regex_match if op == "eq" else (lambda item: not regex_match(item))
    if op == ":" and value == "*":
        return lambda item: _lookup(item, field) is not None
    if op == "!=":
        return lambda item: not _equals(_lookup(item, field), value)
    return lambda item: _equals(_lookup(item, field), value)


def compile_filter(text: str | None) -> Predicate:
    """Compile a filter; an empty filter matches everything. Raises ApiError 400 if malformed."""
    if not text or not text.strip():
        return lambda item: True
    return _Parser(text).parse()
