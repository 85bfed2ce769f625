"""The chart templates (``evplatform.charts``): filled, they are the specs the views have always sent.

No database: the specs are compared whole, with the values placed where they belong, a string
escaped whatever it holds and a list passed through as the very object given.
"""

import json
from typing import Any

from django.http import JsonResponse

from evplatform.charts import chart_spec

ROWS = [{"time": "2026-03-10T12:00:00+00:00", "drawn": 11.7, "limit": 20.0}]
NAME = 'Mall "A" \\ <é> {{ rows }}'


def site_spec(name: str, rows: list[dict[str, Any]], names: list[str], per_phase: bool) -> dict[str, Any]:
    """The site chart's spec as the view wrote it out before it moved to a template."""
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "description": f"Load of {name} against its limit",
        "width": "container",
        "height": 260,
        "data": {"values": rows},
        "transform": [
            {"fold": names, "as": ["series", "value"]},
            {"filter": "isValid(datum.value)"},
        ],
        "mark": {"type": "line", "interpolate": "step-after"},
        "encoding": {
            "x": {"field": "time", "type": "temporal", "title": None},
            "y": {"field": "value", "type": "quantitative", "title": "A per phase" if per_phase else "kW"},
            "color": {
                "field": "series",
                "type": "nominal",
                "title": None,
                "scale": {"domain": names, "range": ["#0b5cad", "#13733b", "#b3261e", "#8a5a00"]}
                if not per_phase
                else {},
            },
            "strokeDash": {
                "condition": {"test": "indexof(datum.series, 'limit') >= 0", "value": [6, 4]},
                "value": [1, 0],
            },
            "tooltip": [
                {"field": "time", "type": "temporal"},
                {"field": "series"},
                {"field": "value", "format": ".1f"},
            ],
        },
    }


def test_the_site_chart_in_kw_is_the_spec_byte_for_byte() -> None:
    names = ["drawn", "allowed", "limit", "unmanaged"]

    spec = chart_spec("portal/site_chart.json", site_name=NAME, rows=ROWS, names=names, per_phase=False)

    assert spec == site_spec(NAME, ROWS, names, per_phase=False)
    assert JsonResponse(spec).content == JsonResponse(site_spec(NAME, ROWS, names, per_phase=False)).content
    assert spec["data"]["values"] is ROWS  # not printed and parsed again


def test_the_site_chart_per_phase_has_its_axis_title_and_no_fixed_colours() -> None:
    names = [f"{p} {kind}" for kind in ("drawn", "limit") for p in ("L1", "L2", "L3")]

    spec = chart_spec("portal/site_chart.json", site_name="Lot", rows=[], names=names, per_phase=True)

    assert json.dumps(spec) == json.dumps(site_spec("Lot", [], names, per_phase=True))


def test_the_charger_chart_is_the_spec_byte_for_byte() -> None:
    rows = [{"time": "2026-03-10T12:00:00+00:00", "phase": "L1", "A": 16.0}]

    spec = chart_spec("portal/charger_chart.json", rows=rows)

    assert json.dumps(spec) == json.dumps(
        {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "width": "container",
            "height": 220,
            "data": {"values": rows},
            "mark": {"type": "line", "interpolate": "step-after"},
            "encoding": {
                "x": {"field": "time", "type": "temporal", "title": None},
                "y": {"field": "A", "type": "quantitative", "title": "Current (A)"},
                "color": {"field": "phase", "type": "nominal", "title": None},
            },
        }
    )
