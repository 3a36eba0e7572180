"""The configuration reference, generated from ``rkd.config.schema`` when the site is built.

A mkdocs hook: in the page that holds ``<!-- config-reference -->`` ... ``<!-- /config-reference -->``
(between them, a note for readers of the unbuilt file) the markers become one table per config section,
a row per field with its type, the values it accepts, its default and its value in the packaged
``default`` config. The descriptions are the comments beside or above each field in the schema's
source, so the page follows the schema and cannot go stale. ``tests/test_docs.py`` checks that every
field appears.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from typing import Any

import yaml
from pydantic import AfterValidator

from rkd.config import RunConfig, load_config

MARKER = re.compile(r"<!-- config-reference -->.*?<!-- /config-reference -->", re.DOTALL)

# what a scalar type accepts when the schema adds no narrower rule
_BASE_ACCEPTED = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}
_SEE_DESCRIPTION = "see the description"
_PACKAGED = object()  # reference_markdown's default: the packaged `default` config


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comments in ``cls``'s source: the comment lines right above it, then those on its lines."""
    source = inspect.getsource(sys.modules[cls.__module__])
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ClassDef) and node.name == cls.__name__):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            above = []
            line = statement.lineno - 1
            while line >= 1 and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            beside = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1) if n in comments]
            found[statement.target.id] = " ".join(above + beside)
    return found


def _accepted_text(validator: AfterValidator) -> str | None:
    """The wording an ``rkd.config.coerce.accepts`` check fails with (kept in its closure)."""
    return inspect.getclosurevars(validator.func).nonlocals.get("accepted")


def describe(annotation: Any) -> tuple[str, str]:
    """(type, accepted values) of a field annotation, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        type_text, accepted = describe(args[0])
        for meta in annotation.__metadata__:
            if isinstance(meta, AfterValidator) and _accepted_text(meta):
                accepted = _accepted_text(meta)
        return type_text, accepted
    if origin is typing.Literal:
        return "choice", "one of " + ", ".join(f"`{choice}`" for choice in args)
    if origin in (typing.Union, types.UnionType):
        options = [describe(arg) for arg in args if arg is not type(None)]
        type_text, accepted = " or ".join(t for t, _ in options), " or ".join(a for _, a in options)
        if any(a == _SEE_DESCRIPTION for _, a in options):
            accepted = _SEE_DESCRIPTION
        if type(None) in args:
            type_text += " or null"
            accepted += "" if "null" in accepted else ", or null"
        return type_text, accepted
    if annotation is list:
        return "list", _SEE_DESCRIPTION
    if origin is list:
        item_type, item_accepted = describe(args[0]) if args else ("any", "anything")
        return f"list of {item_type}", f"a list; each item {item_accepted}"
    if dataclasses.is_dataclass(annotation):
        return "section", "a mapping of the section's fields"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))), _BASE_ACCEPTED.get(
        annotation, _SEE_DESCRIPTION
    )


def _value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (no HTML, no column breaks, no stray emphasis)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("*", "\\*")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _anchor(path: str) -> str:
    return "config-" + path.replace(".", "-")


def _sections(cls: type, instance: Any, packaged: Any, path: str = "", note: str = "") -> list[tuple]:
    """(dotted path, class, default instance, packaged instance, the parent's comment on it) of ``cls``
    and of every section below it, depth first."""
    found = [(path, cls, instance, packaged, note)]
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            below = getattr(packaged, item.name) if packaged is not None else None
            child = f"{path}.{item.name}" if path else item.name
            found += _sections(
                hints[item.name], getattr(instance, item.name), below, child, comments.get(item.name, "")
            )
    return found


def _docstring(cls: type) -> str:
    """``cls``'s own docstring; empty where ``dataclass`` wrote its signature instead."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def _table(path: str, cls: type, instance: Any, packaged: Any, note: str) -> str:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = field_comments(cls)
    rows = [f"## `{path}` {{#{_anchor(path)}}}" if path else "## Top level", ""]
    rows += [f"{_cell(text)}\n" for text in (_docstring(cls), note) if text]
    rows += [
        "| field | type | accepted | default | in `default` (where it differs) | description |",
        "|---|---|---|---|---|---|",
    ]
    for item in dataclasses.fields(cls):
        name = f"{path}.{item.name}" if path else item.name
        type_text, accepted = describe(hints[item.name])
        if dataclasses.is_dataclass(hints[item.name]):
            default = packaged_value = f"[below](#{_anchor(name)})"
        else:
            default = _code(_value(getattr(instance, item.name)))
            packaged_value = _code(_value(getattr(packaged, item.name))) if packaged is not None else default
        rows.append(
            f"| `{name}` | {type_text} | {_cell(accepted)} | {default} "
            f"| {packaged_value if packaged_value != default else ''} | {_cell(comments.get(item.name, ''))} |"
        )
    return "\n".join(rows) + "\n"


def reference_markdown(root: type = RunConfig, packaged: Any = _PACKAGED) -> str:
    """The reference of ``root`` and its sections; ``packaged``: the config whose values get their own column
    (by default the packaged ``default``), or None for none."""
    if packaged is _PACKAGED:
        packaged = load_config("default")
    return "\n".join(_table(*section) for section in _sections(root, root(), packaged))


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs hook: replace the marked block with the generated reference."""
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda _: reference_markdown(), markdown)
