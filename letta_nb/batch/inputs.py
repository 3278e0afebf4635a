"""From what `lnb.map` is given to one message per item, each with its index label.

A DataFrame needs a template: `{column}` is the row's value (format specs work:
`{revenue:,.0f}`), `{index}` the row's label unless a column has that name. A Series or a list
is the messages themselves, or formatted by a template with `{value}` / `{index}` (and the
Series' name). Every mistake is one line naming the column or the item, before anything is
sent.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..core.errors import ConfigurationError

#: Messages over this many characters are refused (a template gone wrong, e.g. a whole table).
MAX_MESSAGE_CHARS = 200_000


@dataclass(frozen=True)
class Items:
    """The batch's input: the index to align the results to, and one message per item."""

    index: pd.Index
    messages: list[str]

    @property
    def labels(self) -> list[Any]:
        return list(self.index)


def _fields(template: str) -> list[str]:
    """The top-level names a template uses (`{a.b}` / `{a[0]}` use `a`)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"the template cannot be read: {exc}") from None
    for _text, name, _spec, _conv in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ConfigurationError(
                "the template uses a positional field ({} or {0}); name a column: {column}"
            )
        top = name.split(".", 1)[0].split("[", 1)[0]
        if top not in names:
            names.append(top)
    return names


def _format(template: str, values: Mapping[str, Any], where: str) -> str:
    try:
        return template.format_map(values)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ConfigurationError(f"the template does not fit {where}: {exc}") from None


def _checked(message: str, where: str) -> str:
    if not message.strip():
        raise ConfigurationError(f"{where} is an empty message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise ConfigurationError(
            f"{where} is {len(message):,} characters (at most {MAX_MESSAGE_CHARS:,})"
        )
    return message


def prepare(items: Any, template: str | None) -> Items:
    """`items` (DataFrame, Series, list/tuple of strings) + `template` → `Items`."""
    if template is not None and not isinstance(template, str):
        raise ConfigurationError(f"template must be a string, not {type(template).__name__}")
    if template is not None and not template.strip():
        raise ConfigurationError("the template is empty")
    if isinstance(items, pd.DataFrame):
        return _from_frame(items, template)
    if isinstance(items, pd.Series):
        return _from_values(items.index, list(items), template, name=items.name)
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigurationError(
            f"items must be a DataFrame, a Series or a list of strings, not {type(items).__name__}"
        )
    return _from_values(pd.RangeIndex(len(items)), list(items), template, name=None)


def _from_frame(frame: pd.DataFrame, template: str | None) -> Items:
    if template is None:
        raise ConfigurationError(
            "a DataFrame needs a template naming its columns, e.g. 'Summarise {text}'"
        )
    if frame.columns.has_duplicates:
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise ConfigurationError(f"the DataFrame has duplicate columns: {', '.join(dup)}")
    columns = {str(c): c for c in frame.columns}
    use_index = "index" not in columns
    fields = _fields(template)
    missing = [f for f in fields if f not in columns and not (use_index and f == "index")]
    if missing:
        known = ", ".join(list(columns)[:20]) or "none"
        raise ConfigurationError(
            f"the template names {', '.join('{' + m + '}' for m in missing)} but the DataFrame "
            f"has no such column (columns: {known})"
        )
    wanted = [f for f in fields if f in columns]
    picked = frame[[columns[f] for f in wanted]] if wanted else frame.iloc[:, :0]
    messages = []
    for i, (label, row) in enumerate(zip(frame.index, picked.itertuples(index=False), strict=True)):
        values: dict[str, Any] = dict(zip(wanted, row, strict=True))
        if use_index:
            values["index"] = label
        where = f"row {label!r} (item {i})"
        messages.append(_checked(_format(template, values, where), where))
    return Items(frame.index, messages)


def _from_values(index: pd.Index, values: list[Any], template: str | None, name: Any) -> Items:
    messages = []
    if template is not None:
        allowed = {"value", "index", *([str(name)] if name is not None else [])}
        unknown = [f for f in _fields(template) if f not in allowed]
        if unknown:
            raise ConfigurationError(
                f"the template names {', '.join('{' + u + '}' for u in unknown)}; for a Series "
                "or a list use {value} and {index}"
            )
    for i, (label, value) in enumerate(zip(index, values, strict=True)):
        where = f"item {label!r}" if label != i else f"item {i}"
        if template is None:
            if not isinstance(value, str):
                raise ConfigurationError(
                    f"{where} is a {type(value).__name__}, not a message; pass a template "
                    "such as 'Describe {value}'"
                )
            messages.append(_checked(value, where))
            continue
        fields: dict[str, Any] = {"value": value, "index": label}
        if name is not None:
            fields[str(name)] = value
        messages.append(_checked(_format(template, fields, where), where))
    return Items(index, messages)
