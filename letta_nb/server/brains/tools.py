"""The demo brain's tools: real pandas computations over the bundled coffee-sales dataset.

Every tool returns a compact JSON string computed from the data (see ``letta_nb.server.data``
for the columns), so a tool_return_message always carries real numbers, never canned text.
Bad arguments raise ``ValueError`` with a one-line message; the runner turns that into a
tool return with status "error".

Calling convention: the runner calls ``TOOLS[name](**arguments)`` with the arguments of the
``ToolCall`` as the brain yielded them. ``write_report`` needs to know where to write, so it
declares a ``workdir`` parameter, which the runner fills in with the agent's folder
(``base.WORKDIR_PARAM``; it is not in the visible arguments); it is approval-gated, so the
file only appears when the runner executes the call after approval.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from letta_nb.server.brains.base import Tool
from letta_nb.server.data import COFFEE_SALES

DATASET_NAME = "coffee_sales"
NUMERIC = ("units", "unit_price", "revenue", "customer_rating")
CATEGORICAL = ("store", "region", "product", "category")
COLUMNS = ("date", *CATEGORICAL, *NUMERIC)
AGGS = ("sum", "mean", "median", "min", "max", "count")
FREQS = {"day": "D", "week": "W", "month": "M", "quarter": "Q"}
# Averages of prices and ratings are meaningful; their sums are not.
MEAN_METRICS = frozenset({"unit_price", "customer_rating"})
CORR_METHODS = ("pearson", "spearman")
WORKDIR_ARG = "workdir"  # write_report's parameter the runner fills in (base.WORKDIR_PARAM)
REPORTS_DIR = "reports"

_ALIASES = {
    "price": "unit_price",
    "unit price": "unit_price",
    "rating": "customer_rating",
    "ratings": "customer_rating",
    "sales": "revenue",
    "stores": "store",
    "regions": "region",
    "products": "product",
    "categories": "category",
}


@lru_cache(maxsize=1)
def load_sales() -> pd.DataFrame:
    """The dataset, parsed once per process. Callers must not mutate it (tools never do)."""
    with files("letta_nb.server.data").joinpath(COFFEE_SALES).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, parse_dates=["date"])


def _column(name: Any, allowed: tuple[str, ...], role: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{role} must be a column name, one of: {', '.join(allowed)}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in allowed:
        raise ValueError(f"unknown {role} {name!r}; expected one of: {', '.join(allowed)}")
    return key


def _choice(value: Any, allowed: tuple[str, ...], role: str) -> str:
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in allowed:
        raise ValueError(f"unknown {role} {value!r}; expected one of: {', '.join(allowed)}")
    return key


def _num(value: Any) -> int | float | None:
    """A JSON-safe Python number rounded for reading (numpy scalars and NaN handled)."""
    if value is None:
        return None
    number = float(value)
    if math.isnan(number):
        return None
    if number.is_integer() and abs(number) < 2**53:
        return int(number)
    return round(number, 2)


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _subset(where: Any) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows matching ``where`` (``{"store": "Airport"}``: category column -> one value,
    matched case-insensitively), and the filter with the dataset's own spelling."""
    df = load_sales()
    if where is None:
        return df, {}
    if not isinstance(where, Mapping):
        raise ValueError('where must map category columns to values, e.g. {"store": "Airport"}')
    canonical: dict[str, str] = {}
    mask = pd.Series(True, index=df.index)
    for raw_column, raw_value in where.items():
        column = _column(raw_column, CATEGORICAL, "filter column")
        values = {str(v).lower(): str(v) for v in df[column].unique()}
        value = values.get(str(raw_value).strip().lower()) if isinstance(raw_value, str) else None
        if value is None:
            known = ", ".join(sorted(values.values()))
            raise ValueError(f"unknown {column} {raw_value!r}; expected one of: {known}")
        canonical[column] = value
        mask &= df[column] == value
    if not mask.any():
        shown = ", ".join(f"{c}={v}" for c, v in canonical.items())
        raise ValueError(f"no rows match {shown}")
    return df[mask], canonical


def _scoped(payload: dict[str, Any], where: dict[str, str]) -> dict[str, Any]:
    """A tool's payload, with the filter it applied (only when there was one)."""
    if where:
        payload["where"] = where
    return payload


def describe_dataset() -> str:
    """Shape, columns, coverage and headline totals of the dataset."""
    df = load_sales()
    return _dumps(
        {
            "dataset": DATASET_NAME,
            "rows": len(df),
            "columns": {
                c: "numeric" if c in NUMERIC else "date" if c == "date" else "category"
                for c in df.columns
            },
            "date_from": df["date"].min().strftime("%Y-%m-%d"),
            "date_to": df["date"].max().strftime("%Y-%m-%d"),
            "stores": int(df["store"].nunique()),
            "regions": int(df["region"].nunique()),
            "products": int(df["product"].nunique()),
            "categories": int(df["category"].nunique()),
            "total_units": _num(df["units"].sum()),
            "total_revenue": _num(df["revenue"].sum()),
            "mean_rating": _num(df["customer_rating"].mean()),
        }
    )


def column_summary(column: str, where: Mapping[str, str] | None = None) -> str:
    """Distribution of one column: quantiles for numbers, most frequent values for categories
    (of the rows matching ``where``, when given)."""
    name = _column(column, COLUMNS, "column")
    rows, scope = _subset(where)
    series = rows[name]
    if name in NUMERIC:
        q = series.quantile([0.25, 0.5, 0.75])
        return _dumps(
            _scoped(
                {
                    "column": name,
                    "kind": "numeric",
                    "count": int(series.count()),
                    "mean": _num(series.mean()),
                    "std": _num(series.std()),
                    "min": _num(series.min()),
                    "p25": _num(q[0.25]),
                    "median": _num(q[0.5]),
                    "p75": _num(q[0.75]),
                    "max": _num(series.max()),
                },
                scope,
            )
        )
    if name == "date":
        return _dumps(
            _scoped(
                {
                    "column": name,
                    "kind": "date",
                    "count": int(series.count()),
                    "min": series.min().strftime("%Y-%m-%d"),
                    "max": series.max().strftime("%Y-%m-%d"),
                    "distinct_days": int(series.nunique()),
                },
                scope,
            )
        )
    counts = series.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    return _dumps(
        _scoped(
            {
                "column": name,
                "kind": "category",
                "count": int(series.count()),
                "unique": int(series.nunique()),
                "top": [{"value": str(k), "rows": int(v)} for k, v in counts.head(5).items()],
            },
            scope,
        )
    )


def group_stats(
    by: str = "region",
    metric: str = "revenue",
    agg: str = "sum",
    where: Mapping[str, str] | None = None,
) -> str:
    """``agg`` of ``metric`` per value of the category ``by``, largest first, plus the overall
    (over the rows matching ``where``, when given)."""
    by = _column(by, CATEGORICAL, "group-by column")
    metric = _column(metric, NUMERIC, "metric")
    agg = _choice(agg, AGGS, "aggregation")
    df, scope = _subset(where)
    grouped = df.groupby(by, sort=True)[metric].agg(agg)
    grouped = grouped.sort_values(ascending=False, kind="stable")
    key = f"{metric}_{agg}"
    return _dumps(
        _scoped(
            {
                "by": by,
                "metric": metric,
                "agg": agg,
                "groups": [{by: str(k), key: _num(v)} for k, v in grouped.items()],
                "overall": _num(df[metric].agg(agg)),
            },
            scope,
        )
    )


def _positive_int(value: Any, role: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{role} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{role} must be a positive integer, got {value!r}") from None
    if number < 1 or number != float(value):
        raise ValueError(f"{role} must be a positive integer, got {value!r}")
    return number


def top_n(
    column: str = "product",
    n: int = 5,
    by: str = "revenue",
    where: Mapping[str, str] | None = None,
) -> str:
    """The ``n`` values of the category ``column`` with the highest total (mean for prices and
    ratings) of ``by``, each with its share of the grand total when ``by`` is additive (of the
    rows matching ``where``, when given: "the best product at the Airport store")."""
    column = _column(column, CATEGORICAL, "column")
    by = _column(by, NUMERIC, "ranking metric")
    count = _positive_int(n, "n")
    df, scope = _subset(where)
    agg = "mean" if by in MEAN_METRICS else "sum"
    ranked = df.groupby(column, sort=True)[by].agg(agg)
    ranked = ranked.sort_values(ascending=False, kind="stable").head(count)
    total = float(df[by].sum())
    rows: list[dict[str, Any]] = []
    for rank, (k, v) in enumerate(ranked.items(), start=1):
        row: dict[str, Any] = {"rank": rank, column: str(k), f"{by}_{agg}": _num(v)}
        if agg == "sum":
            row["share_pct"] = _num(100.0 * float(v) / total)
        rows.append(row)
    payload: dict[str, Any] = {"column": column, "by": by, "agg": agg, "n": len(rows), "top": rows}
    if agg == "sum":
        payload["total"] = _num(total)
    else:
        payload["overall_mean"] = _num(df[by].mean())
    return _dumps(_scoped(payload, scope))


def trend(
    metric: str = "revenue", freq: str = "month", where: Mapping[str, str] | None = None
) -> str:
    """``metric`` per period (sum, or mean for prices and ratings), with change, peak and low
    (of the rows matching ``where``, when given)."""
    metric = _column(metric, NUMERIC, "metric")
    freq = _choice(freq, tuple(FREQS), "frequency")
    df, scope = _subset(where)
    agg = "mean" if metric in MEAN_METRICS else "sum"
    periods = df["date"].dt.to_period(FREQS[freq])
    series = df.groupby(periods, sort=True)[metric].agg(agg)
    labels = [_period_label(p, freq) for p in series.index]
    values = [_num(v) for v in series.to_numpy()]
    first, last = float(series.iloc[0]), float(series.iloc[-1])
    peak, low = int(series.to_numpy().argmax()), int(series.to_numpy().argmin())
    return _dumps(
        _scoped(
            {
                "metric": metric,
                "agg": agg,
                "freq": freq,
                "periods": [{"period": p, "value": v} for p, v in zip(labels, values, strict=True)],
                "first": {"period": labels[0], "value": values[0]},
                "last": {"period": labels[-1], "value": values[-1]},
                "change_pct": _num(100.0 * (last - first) / first) if first else None,
                "peak": {"period": labels[peak], "value": values[peak]},
                "low": {"period": labels[low], "value": values[low]},
            },
            scope,
        )
    )


def _period_label(period: pd.Period, freq: str) -> str:
    if freq == "week":
        return f"{period.start_time:%Y-%m-%d}/{period.end_time:%Y-%m-%d}"
    if freq == "month":
        return f"{period.start_time:%Y-%m}"
    if freq == "quarter":
        return f"{period.year}-Q{period.quarter}"
    return f"{period.start_time:%Y-%m-%d}"


def _strength(r: float) -> str:
    size = abs(r)
    bands = ((0.1, "negligible"), (0.3, "weak"), (0.5, "moderate"), (0.7, "strong"))
    label = next((name for limit, name in bands if size < limit), "very strong")
    if label == "negligible":
        return label
    return f"{label} {'positive' if r > 0 else 'negative'}"


def correlation(a: str = "units", b: str = "customer_rating", method: str = "pearson") -> str:
    """Correlation of two numeric columns (Spearman is Pearson on ranks, so no SciPy needed)."""
    a = _column(a, NUMERIC, "column a")
    b = _column(b, NUMERIC, "column b")
    method = _choice(method, CORR_METHODS, "method")
    if a == b:
        raise ValueError("correlation needs two different columns")
    df = load_sales()
    x, y = df[a], df[b]
    if method == "spearman":
        x, y = x.rank(), y.rank()
    r = float(x.corr(y))
    return _dumps(
        {
            "a": a,
            "b": b,
            "method": method,
            "r": round(r, 3),
            "n": len(df),
            "strength": _strength(r),
        }
    )


def report_filename(title: str) -> str:
    """The file name write_report uses for ``title`` (lowercase slug, ``.md``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].strip("-")
    if not slug:
        raise ValueError("title must contain at least one letter or digit")
    return f"{slug}.md"


def write_report(title: str, body: str, workdir: str) -> str:
    """Write ``# title`` + ``body`` to ``<workdir>/reports/<slug>.md`` (approval-gated)."""
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title must be a non-empty string")
    if not isinstance(body, str) or not body.strip():
        raise ValueError("body must be a non-empty string")
    if not isinstance(workdir, str) or not Path(workdir).is_absolute():
        raise ValueError("workdir must be an absolute path (the runner passes it)")
    relative = f"{REPORTS_DIR}/{report_filename(title)}"
    path = Path(workdir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    content = f"# {title.strip()}\n\n{body.strip()}\n"
    path.write_text(content, encoding="utf-8")
    return _dumps(
        {
            "title": title.strip(),
            "path": str(path),
            "relative_path": relative,
            "bytes": len(content.encode("utf-8")),
        }
    )


TOOLS: Mapping[str, Tool] = MappingProxyType(
    {
        "describe_dataset": describe_dataset,
        "column_summary": column_summary,
        "group_stats": group_stats,
        "top_n": top_n,
        "trend": trend,
        "correlation": correlation,
        "write_report": write_report,
    }
)
