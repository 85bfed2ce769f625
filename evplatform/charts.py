"""Chart specs (Vega-Lite) from JSON templates beside the page templates. Schema: any.

A chart's look is page design, like the page's HTML: it lives in ``templates/<name>.json``
(e.g. ``portal/site_chart.json``), where it reads as the JSON it is, and the view hands over
only the data. Django's template engine fills it, so ``{% if %}`` picks a variant (per-phase
axes or kW). A string value prints escaped for a JSON string, so it stands between quotes in
the template (``"Load of {{ site_name }} against its limit"``); any other value stands on its
own (``"data": {"values": {{ rows }}}``). The text is parsed back into the dict a view returns
with ``JsonResponse``, so the response is compact JSON whatever the template's layout, and a
template that is not valid JSON once filled fails loudly.

Values other than strings are not printed and parsed again: the template gets a stand-in
string and the parsed spec the value itself. A month of a site's per-phase load is 300 kB of
rows; printing and parsing them would add a sixth to the chart's time.
"""

import json
from typing import Any, cast

from django.template import Context, engines
from django.template.backends.django import DjangoTemplates

_STAND_IN = "\x00chart-value:"
"""Starts the string that stands for a value in the filled text (no stored text holds a NUL)."""


class _Value:
    """A value as the template prints it (a string escaped, else its stand-in) and tests it (its truth)."""

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        if isinstance(self.value, str):
            return json.dumps(self.value)[1:-1]
        return json.dumps(_STAND_IN + self.name)

    def __bool__(self) -> bool:
        return bool(self.value)


def _put(node: Any, values: dict[str, Any]) -> Any:
    """``node`` with each stand-in replaced by its value (the values themselves are not walked)."""
    if isinstance(node, str) and node.startswith(_STAND_IN):
        return values[node.removeprefix(_STAND_IN)]
    if isinstance(node, dict):
        return {key: _put(item, values) for key, item in node.items()}
    if isinstance(node, list):
        return [_put(item, values) for item in node]
    return node


def chart_spec(name: str, **values: Any) -> dict[str, Any]:
    """The spec of the chart template ``name`` (e.g. ``portal/site_chart.json``) filled with ``values``."""
    template = cast(DjangoTemplates, engines["django"]).engine.get_template(name)
    # Not HTML: nothing is escaped for it.
    context = Context({key: _Value(key, value) for key, value in values.items()}, autoescape=False)
    spec: dict[str, Any] = _put(json.loads(template.render(context)), values)
    return spec
