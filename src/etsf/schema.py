"""Declarative document schemas: each document the agent reads (the policy, the fail-safe
configuration) is described once, as a tree of the nodes below, and from that one description
come the validator (:meth:`Node.check`), the reference table in ``docs/reference/``
(:func:`markdown_table`, written by ``python -m etsf.schema_docs``) and the check that the
Ansible roles' ``argument_specs`` agree (``ansible_type``, ``choices``, defaults).

Every error is one line in one style, ``<path>: <what was expected> expected (got <value>)``,
e.g. ``policy.rate_limits.register.rate: an integer 0..4294967295 expected (got -5)``.
Rules that span several fields (a port in two lists, a backend of two services) stay with
their document and raise the same :class:`Invalid`.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Callable, Iterator

#: no value: a key absent from the document, or a node without a static default
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__copy__": lambda self: self,
                                    "__deepcopy__": lambda self, memo: self})()

_SHOW_MAX = 60


def show(v: Any) -> str:
    """A value as an error message quotes it (one line, bounded)."""
    if v is MISSING:
        return "nothing"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) <= _SHOW_MAX else repr(v[:_SHOW_MAX]) + "..."
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    return f"a {type(v).__name__}"


def literal(v: Any) -> str:
    """A value as the reference tables write it (YAML flow style)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def hidden(v: Any) -> str:
    """A secret as an error message quotes it: its type and length, never its text."""
    if isinstance(v, str):
        return f"a string of {len(v)} characters"
    return show(v) if v is None or isinstance(v, (bool, int, float)) else f"a {type(v).__name__}"


class Invalid(ValueError):
    """A value the schema refuses: ``path`` names it (empty: the whole document), the message
    says what was expected; a ``secret`` value is described, never quoted."""

    def __init__(self, path: str, expected: str, got: Any = MISSING, *, secret: bool = False):
        self.path = path
        self.expected = expected
        self.got = got
        self.message = f"{expected} expected (got {hidden(got) if secret else show(got)})"
        super().__init__(f"{path or 'document'}: {self.message}")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    # a key that would break the one line (or make it huge) is quoted like a value
    name = key if key.isprintable() and len(key) <= _SHOW_MAX else show(key)
    return f"{path}.{name}" if path else name


class Node:
    """One value of a document.  ``default`` is used when the key is absent (a deep copy);
    ``default_text`` documents a default the document works out from other fields, ``label``
    names the type in the reference table when the error text is too long for it; a ``secret``
    value is never quoted in an error."""

    ansible = "raw"

    def __init__(self, doc: str = "", *, default: Any = MISSING, required: bool = False,
                 nullable: bool = False, default_text: str | None = None, label: str | None = None,
                 secret: bool = False):
        self.doc = doc
        self.secret = secret
        self.label = label
        self.default = default
        self.required = required
        self.nullable = nullable
        self.default_text = default_text

    # -- validation
    def expected(self) -> str:
        raise NotImplementedError

    def convert(self, v: Any, path: str) -> Any:
        raise NotImplementedError

    #: what null stands for when the node is nullable (containers: empty; leaves: null itself)
    empty: Any = None

    def check(self, v: Any, path: str) -> Any:
        """The normalised value, or Invalid naming the first mistake."""
        if v is None and self.nullable:
            if self.empty is None:
                return None
            v = copy.copy(self.empty)
        return self.convert(v, path)

    def fail(self, path: str, v: Any, expected: str | None = None):
        raise Invalid(path, expected or self.expected(), v, secret=self.secret)

    def default_value(self) -> Any:
        return copy.deepcopy(self.default)

    # -- documentation and argument_specs
    def type_text(self) -> str:
        return self.label or self.describe()

    def describe(self) -> str:
        return self.expected()

    def choices(self) -> list | None:
        return None

    def rows(self, path: str) -> Iterator[tuple[str, Node]]:
        yield path, self


class Range(Node):
    """A number in lo..hi (both included); Int and Num differ in the numbers they take."""

    noun = "number"

    def __init__(self, lo, hi, doc: str = "", **kw):
        super().__init__(doc, **kw)
        self.lo, self.hi = lo, hi

    def takes(self, v) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    def span(self) -> str:
        return f"{self.lo:g}..{self.hi:g}"

    def expected(self):
        article = "an" if self.noun[0] in "aeiou" else "a"
        return ("null or " if self.nullable else "") + f"{article} {self.noun} {self.span()}"

    def describe(self):
        return f"{self.noun} {self.span()}" + (" or null" if self.nullable else "")

    def convert(self, v, path):
        if isinstance(v, bool) or not self.takes(v) or not self.lo <= v <= self.hi:
            self.fail(path, v)
        return v


class Int(Range):
    ansible = "int"
    noun = "integer"

    def takes(self, v):
        return isinstance(v, int)

    def span(self):
        return f"{self.lo}..{self.hi}"


class Num(Range):
    ansible = "float"


class Bool(Node):
    ansible = "bool"

    def expected(self):
        return "true or false"

    def describe(self):
        return "boolean"

    def convert(self, v, path):
        if not isinstance(v, bool):
            self.fail(path, v)
        return v


class Choice(Node):
    ansible = "str"

    def __init__(self, options, doc: str = "", **kw):
        super().__init__(doc, **kw)
        self.options = tuple(options)

    def expected(self):
        if len(self.options) == 1:
            return literal(self.options[0])
        return "one of " + ", ".join(literal(o) for o in self.options)

    def describe(self):
        return " \\| ".join(f"`{literal(o)}`" for o in self.options)

    def choices(self):
        return list(self.options)

    def convert(self, v, path):
        # the same type too: 1.0 or True is not the version 1
        if not any(type(v) is type(o) and v == o for o in self.options):
            self.fail(path, v)
        return v


class Text(Node):
    """A string accepted by ``accept`` (a compiled regex or a predicate)."""

    ansible = "str"

    def __init__(self, what: str, accept, doc: str = "", **kw):
        super().__init__(doc, **kw)
        self.what = what
        self.accept = accept.match if hasattr(accept, "match") else accept

    def expected(self):
        return self.what

    def describe(self):
        return self.what

    def convert(self, v, path):
        if not isinstance(v, str) or not self.accept(v):
            self.fail(path, v)
        return v


class Custom(Node):
    """A leaf checked by ``parse(value)``, which returns the normalised value or raises
    ValueError whose text (when it has one) says more precisely what was expected."""

    def __init__(self, what: str, parse: Callable[[Any], Any], doc: str = "", *, ansible: str = "raw", **kw):
        super().__init__(doc, **kw)
        self.what = what
        self.parse = parse
        self.ansible = ansible

    def expected(self):
        return self.what

    def describe(self):
        return self.what

    def convert(self, v, path):
        try:
            return self.parse(v)
        except ValueError as e:
            self.fail(path, v, str(e) or None)
        return None  # not reached


class List(Node):
    """A list of ``item``; ``unique`` is a key function (items with equal keys are duplicates)."""

    ansible = "list"
    empty: Any = []

    def __init__(self, item: Node, doc: str = "", *, min_len: int = 0, max_len: int | None = None,
                 unique: Callable[[Any], Any] | None = None, what: str = "items", **kw):
        super().__init__(doc, **kw)
        self.item, self.min_len, self.max_len, self.unique, self.what = item, min_len, max_len, unique, what

    def _count(self):
        if self.max_len is not None and self.min_len == self.max_len:
            return f"exactly {self.max_len} {self.what}"
        if self.max_len is None:
            return f"{self.min_len} or more {self.what}" if self.min_len else ""
        return f"{self.min_len}..{self.max_len} {self.what}"

    def expected(self):
        return "a list" + (f" of {self._count()}" if self._count() else "") + (" or null" if self.nullable else "")

    def describe(self):
        parts = [f"list of {self.item.type_text()}"]
        if self._count():
            parts.append(self._count())
        if self.unique:
            parts.append("no duplicates")
        return ", ".join(parts)

    def convert(self, v, path):
        if not isinstance(v, list):
            self.fail(path, v)
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            self.fail(path, v)
        out, seen = [], {}
        for i, x in enumerate(v):
            y = self.item.check(x, f"{path}[{i}]")
            if self.unique:
                k = self.unique(y)
                if k in seen:
                    raise Invalid(f"{path}[{i}]", f"no duplicate of {path}[{seen[k]}]", x)
                seen[k] = i
            out.append(y)
        return out

    def rows(self, path):
        yield path, self
        if isinstance(self.item, (Map, MapOf)):
            yield from self.item.rows(f"{path}[]", own_row=False)


class _Mapping(Node):
    ansible = "dict"
    empty: Any = {}

    def expected(self):
        return "a mapping" + (" or null" if self.nullable else "")

    def string_keys(self, v, path) -> dict:
        if not isinstance(v, dict):
            self.fail(path, v)
        for k in v:
            if not isinstance(k, str):
                raise Invalid(path, "string keys", k)
        return v


class Map(_Mapping):
    """A mapping with a fixed set of keys, each its own node (absent keys take their default)."""

    def __init__(self, fields: dict[str, Node], doc: str = "", **kw):
        super().__init__(doc, **kw)
        self.fields = fields

    def describe(self):
        return "mapping"

    def convert(self, v, path):
        for k in self.string_keys(v, path):
            if k not in self.fields:
                raise Invalid(_join(path, k), "one of the keys " + ", ".join(self.fields), k)
        for k, node in self.fields.items():
            if node.required and k not in v:
                raise Invalid(_join(path, k), node.expected())
        out = {}
        for k, node in self.fields.items():
            if k in v:
                out[k] = node.check(v[k], _join(path, k))
            else:
                d = node.default_value()
                if d is not MISSING:
                    out[k] = d
        return out

    def default_value(self):
        if self.default is not MISSING:
            return copy.deepcopy(self.default)
        if any(n.required for n in self.fields.values()):
            return MISSING
        return {k: d for k, d in ((k, n.default_value()) for k, n in self.fields.items()) if d is not MISSING}

    def rows(self, path, own_row=True):
        if own_row and path:
            yield path, self
        for k, node in self.fields.items():
            yield from node.rows(f"{path}.{k}" if path else k)


class MapOf(_Mapping):
    """A mapping from keys of ``keys`` (normalised by ``key_norm``) to values of ``value``, merged
    over ``default``.  ``keys`` is the names allowed, or a node that checks each key (any name
    it accepts)."""

    def __init__(self, keys, value: Node, doc: str = "", *, key_what: str = "keys", key_label: str = "KEY",
                 key_norm: Callable[[str], str] = str, **kw):
        super().__init__(doc, **kw)
        self.keys = keys if isinstance(keys, Node) else tuple(keys)
        self.value, self.key_what, self.key_norm = value, key_what, key_norm
        self.key_label = key_label

    def has_key(self, name: str) -> bool:
        if isinstance(self.keys, Node):
            try:
                self.keys.check(name, "")
            except Invalid:
                return False
            return True
        return self.key_norm(name) in self.keys

    def describe(self):
        return f"mapping of {self.key_what} to {self.value.type_text()}"

    def convert(self, v, path):
        out = self.default_value()
        for k, x in self.string_keys(v, path).items():
            name = self.key_norm(k)
            if isinstance(self.keys, Node):
                name = self.keys.check(name, path)
            elif name not in self.keys:
                raise Invalid(_join(path, k), f"one of the {self.key_what} " + ", ".join(self.keys), k)
            out[name] = self.value.check(x, _join(path, k))
        return out

    def rows(self, path, own_row=True):
        if own_row:
            yield path, self
        yield f"{path}.<{self.key_label}>", self.value


# ---------------------------------------------------------------------------
# derived views: the reference table
# ---------------------------------------------------------------------------


def default_text(node: Node) -> str:
    if node.required:
        return "required"
    if node.default_text is not None:
        return node.default_text
    if isinstance(node, (Map, MapOf)) and node.default is MISSING:
        return "(each key's default)" if isinstance(node, Map) else "see below"
    d = node.default_value()
    return "—" if d is MISSING else f"`{literal(d)}`"


def markdown_table(root: Node, title: str, intro: str) -> str:
    """The reference of one document as Markdown: one row per key path."""
    lines = [f"# {title}", "", "<!-- generated by `python -m etsf.schema_docs`; edit the schema, not this file -->",
             "", intro, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for path, node in root.rows(""):
        cells = [f"`{path}`", node.type_text(), default_text(node), node.doc]
        lines.append("| " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def node_at(root: Node, path: str) -> Node:
    """The node of a dotted key path ('actions.recovery'); KeyError if the schema has none."""
    node = root
    for part in path.split(".") if path else []:
        if isinstance(node, List):
            node = node.item
        if isinstance(node, Map):
            node = node.fields[part]
        elif isinstance(node, MapOf) and node.has_key(part):
            node = node.value
        else:
            raise KeyError(path)
    return node
