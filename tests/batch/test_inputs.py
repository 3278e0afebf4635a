"""From a DataFrame / Series / list to one message per item; every mistake is one line before
anything is sent."""

from __future__ import annotations

import pandas as pd
import pytest

from letta_nb.batch.inputs import prepare
from letta_nb.core.errors import ConfigurationError


def test_a_dataframe_row_formats_the_template_keeping_the_index() -> None:
    df = pd.DataFrame(
        {"store": ["Airport", "Harbor"], "revenue": [1234.5, 99.0], "unused": [object(), None]},
        index=pd.Index(["a", "b"], name="id"),
    )
    items = prepare(df, "{store} made ${revenue:,.0f} ({index})")
    assert items.messages == ["Airport made $1,234 (a)", "Harbor made $99 (b)"]
    assert items.index.equals(df.index) and items.labels == ["a", "b"]


def test_a_series_or_a_list_is_the_messages_or_formats_value_and_index() -> None:
    assert prepare(["hi", "/long 3"], None).messages == ["hi", "/long 3"]
    s = pd.Series([3, 5], index=["x", "y"], name="n")
    assert prepare(s, "/long {value}").messages == ["/long 3", "/long 5"]
    assert prepare(s, "{index}: /long {n}").messages == ["x: /long 3", "y: /long 5"]
    assert list(prepare(("a", "b"), None).index) == [0, 1]


@pytest.mark.parametrize(
    ("items", "template", "says"),
    [
        (pd.DataFrame({"a": [1]}), None, "a DataFrame needs a template"),
        (pd.DataFrame({"a": [1]}), "{b}", "names {b} but the DataFrame has no such column"),
        (pd.DataFrame({"a": [1]}), "{} {a}", "positional field"),
        (pd.DataFrame({"a": [1]}), "{a:%Y}", "does not fit row 0"),
        (pd.DataFrame({"a": [" "]}), "{a}", "row 0 (item 0) is an empty message"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "{a}", "duplicate columns: a"),
        (["ok", 3], None, "item 1 is a int, not a message"),
        (pd.Series(["x"]), "{other}", "use {value} and {index}"),
        ("just a string", None, "not str"),
        ({"a": 1}, None, "not dict"),
        (["x"], "", "the template is empty"),
        (["x" * 300_000], None, "300,000 characters"),
    ],
)
def test_mistakes_are_one_line(items: object, template: str | None, says: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        prepare(items, template)
    assert says in str(err.value) and "\n" not in str(err.value)
