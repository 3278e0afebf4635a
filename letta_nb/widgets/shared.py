"""One Layout and one Style widget per class, shared by the widgets of one view.

Every ipywidget opens a comm for itself *and* creates a fresh `Layout` (and, for most
controls, a `...Style`) widget with its own comm unless one is passed in. A view's widgets
all use the default styling, so they can share one instance each: a view opens about a third of
the comms it would otherwise, and building it (traitlets defaults, `get_state`, one serialised
`comm_open` each) is what a `%%letta` cell waits for before its first frame.

A shared instance is never mutated (a widget that changes its own layout, e.g. the approval
card's `display`, gets its own) and never closed by a widget that uses it: the view that owns
the `Shared` closes it last.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets


class Shared:
    """Lazily created shared `Layout`s (by their keyword values) and styles (by class)."""

    def __init__(self) -> None:
        self._layouts: dict[tuple[tuple[str, Any], ...], widgets.Layout] = {}
        self._styles: dict[type, widgets.Widget] = {}

    def layout(self, **traits: Any) -> widgets.Layout:
        key = tuple(sorted(traits.items()))
        found = self._layouts.get(key)
        if found is None:
            found = self._layouts[key] = widgets.Layout(**traits)
        return found

    def style(self, widget_cls: type[widgets.Widget]) -> widgets.Widget | None:
        """The shared style for `widget_cls` (its `style` trait's class); None without one."""
        trait = widget_cls.class_traits().get("style")
        style_cls = getattr(trait, "klass", None)
        if not isinstance(style_cls, type):
            return None
        found = self._styles.get(style_cls)
        if found is None:
            found = self._styles[style_cls] = style_cls()
        return found

    def kw(self, widget_cls: type[widgets.Widget], **layout: Any) -> dict[str, Any]:
        """`layout=` (and `style=`) keyword arguments for a `widget_cls` constructor."""
        out: dict[str, Any] = {"layout": self.layout(**layout)}
        style = self.style(widget_cls)
        if style is not None:
            out["style"] = style
        return out

    def html(self, value: str = "", **layout: Any) -> widgets.HTML:
        return widgets.HTML(value=value, **self.kw(widgets.HTML, **layout))

    def button(self, **kwargs: Any) -> widgets.Button:
        return widgets.Button(**kwargs, **self.kw(widgets.Button))

    def instances(self) -> list[widgets.Widget]:
        return [*self._layouts.values(), *self._styles.values()]

    def close(self) -> None:
        for w in self.instances():
            w.close()
        self._layouts.clear()
        self._styles.clear()
