"""The readings API: one item per connector and instant, cursor paging, the window, the filters.

Real PostgreSQL (the partitioned readings table); every request goes through the API with a
token, as an integrator's would.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import tenant_context

from chargepoint.models import ChargingStation, MeterReading, ReadingContext
from chargepoint.partitions import partitions_ensure
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA
from tests.factories import ChargingStationFactory, MeterReadingFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
URL = "/api/v1/readings/"


@pytest.fixture
def api(make_user) -> Client:
    user, _ = make_user(Role.SITE_VIEWER)
    _, raw = api_token_create(user=user, name="readings")
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


def readings_store(rows: list[MeterReading]) -> None:
    """Bulk-create ``rows`` after making their months' partitions."""
    times = [row.sampled_at for row in rows]
    partitions_ensure(min(times), max(times))
    MeterReading.objects.bulk_create(rows)


def window(**params: Any) -> dict[str, Any]:
    """A request around T0 (the fixed test dates are far from the default window)."""
    return {"since": (T0 - timedelta(hours=1)).isoformat(), "until": (T0 + timedelta(days=1)).isoformat(), **params}


def keys(items: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(item["sampled_at"], item["charge_point_id"], item["connector_id"]) for item in items]


def walk(api: Client, first: str | None = None, params: dict[str, Any] | None = None, link: str = "next") -> list:
    """Every page from the first request on, following ``link``; the pages' items in order."""
    pages = []
    body = api.get(first or URL, params or {}).json()
    pages.append(body["results"])
    while body[link]:
        assert len(pages) < 100, "the cursor does not advance"
        body = api.get(body[link]).json()
        pages.append(body["results"])
    return pages


def expected_keys(qs: Any = None) -> list[tuple[str, str, int]]:
    """What the API should list, in its order, read straight from the table."""
    names = dict(ChargingStation.objects.values_list("pk", "charge_point_id"))
    rows = (qs if qs is not None else MeterReading.objects.all()).order_by("sampled_at", "station_id", "connector_no")
    return [
        (r.sampled_at.isoformat().replace("+00:00", "Z"), names[r.station_id], r.connector_no)
        for r in rows
        if T0 - timedelta(hours=1) <= r.sampled_at < T0 + timedelta(days=1)
    ]


def test_an_item_is_one_connector_at_one_instant_with_all_its_values(api) -> None:
    station = ChargingStationFactory(charge_point_id="CP-SHAPE")
    MeterReadingFactory(
        station=station,
        sampled_at=T0,
        connector_no=2,
        context=ReadingContext.SAMPLE_PERIODIC,
        energy_wh=1500.5,
        current_l1_a=16.0,
        current_l2_a=15.5,
        extra={"Temperature@Body": 31.5, "Voltage|L1-N": 231.0},
    )

    body = api.get(URL, window()).json()

    assert (body["previous"], body["next"]) == (None, None)
    assert body["results"] == [
        {
            "charge_point_id": "CP-SHAPE",
            "connector_id": 2,
            "sampled_at": "2026-05-04T08:00:00Z",
            "context": "Sample.Periodic",
            "values": [
                {
                    "measurand": "Energy.Active.Import.Register",
                    "phase": "",
                    "location": "",
                    "value": 1500.5,
                    "unit": "Wh",
                },
                {"measurand": "Current.Import", "phase": "L1", "location": "", "value": 16.0, "unit": "A"},
                {"measurand": "Current.Import", "phase": "L2", "location": "", "value": 15.5, "unit": "A"},
                {"measurand": "Temperature", "phase": "", "location": "Body", "value": 31.5, "unit": "Celsius"},
                {"measurand": "Voltage", "phase": "L1-N", "location": "", "value": 231.0, "unit": "V"},
            ],
        }
    ]


def test_paging_by_cursor_forward_and_back_gives_the_whole_set_once_in_order(api) -> None:
    stations = [ChargingStationFactory(charge_point_id=f"CP-PAGE-{n}") for n in range(3)]
    readings_store(
        [
            MeterReading(station=s, sampled_at=T0 + timedelta(minutes=m), connector_no=c, power_w=float(m))
            for s in stations
            for c in (1, 2)
            for m in range(40)
        ]
    )
    expected = expected_keys()
    assert len(expected) == 240

    forward = walk(api, params=window(limit=25))

    assert [len(page) for page in forward] == [25] * 9 + [15]
    assert [k for page in forward for k in keys(page)] == expected
    # From the last page back to the first through the previous links: the same pages.
    last = api.get(URL, window(limit=25)).json()
    while last["next"]:
        last = api.get(last["next"]).json()
    backward = [last["results"], *walk(api, last["previous"], link="previous")]
    assert [keys(page) for page in reversed(backward)] == [keys(page) for page in forward]


def test_rows_sharing_an_instant_are_neither_lost_nor_repeated_at_a_page_boundary(api) -> None:
    stations = [ChargingStationFactory(charge_point_id=f"CP-TIE-{n}") for n in range(7)]
    readings_store(
        [
            MeterReading(station=s, sampled_at=T0 + timedelta(seconds=t), connector_no=1)
            for s in stations
            for t in (0, 1)
        ]
        + [MeterReading(station=stations[0], sampled_at=T0 + timedelta(seconds=1), connector_no=0)]
    )

    pages = walk(api, params=window(limit=3))

    assert [k for page in pages for k in keys(page)] == expected_keys()
    assert len(pages) == 5  # 15 rows, 3 a page, and each boundary falls among equal times


def test_turning_back_among_rows_sharing_an_instant_gives_the_same_pages(api) -> None:
    """DRF's own cursor returned an empty or shifted page here (its offset is of the other way)."""
    stations = [ChargingStationFactory(charge_point_id=f"CP-TURN-{n}") for n in range(7)]
    readings_store(
        [
            MeterReading(station=s, sampled_at=T0 + timedelta(seconds=t), connector_no=1)
            for s in stations
            for t in (0, 1, 2)
        ]
    )
    bodies = [api.get(URL, window(limit=3)).json()]
    while bodies[-1]["next"]:
        bodies.append(api.get(bodies[-1]["next"]).json())
    assert len(bodies) == 7

    for n in range(1, len(bodies)):
        back = api.get(bodies[n]["previous"]).json()
        assert keys(back["results"]) == keys(bodies[n - 1]["results"]), f"back from page {n + 1}"
        assert keys(api.get(back["next"]).json()["results"]) == keys(bodies[n]["results"])
    assert api.get(URL, window(limit=3)).json()["previous"] is None


def test_thousands_of_readings_at_one_instant_page_through(api) -> None:
    """Clock-aligned readings of a large tenant: more rows share one instant than DRF's cursor
    offset may skip (1,000), so only a cursor on the whole key pages through them."""
    stations = [ChargingStationFactory(charge_point_id=f"CP-CLOCK-{n}") for n in range(5)]
    readings_store(
        [MeterReading(station=s, sampled_at=T0, connector_no=c, energy_wh=1.0) for s in stations for c in range(500)]
    )

    pages = walk(api, params=window(limit=1000))

    assert [len(page) for page in pages] == [1000, 1000, 500]
    assert [k for page in pages for k in keys(page)] == expected_keys()


def test_the_default_window_is_the_last_day(api) -> None:
    station = ChargingStationFactory(charge_point_id="CP-WINDOW")
    now = timezone.now().replace(microsecond=0)
    for age in (timedelta(days=2), timedelta(hours=23), timedelta(minutes=1)):
        MeterReadingFactory(station=station, sampled_at=now - age, power_w=age.total_seconds())

    recent = api.get(URL, {"charger": "CP-WINDOW"}).json()["results"]
    assert [item["values"][1]["value"] for item in recent] == [23 * 3600.0, 60.0]
    # Only until: the day before it; only since: from it to now.
    before = api.get(URL, {"charger": "CP-WINDOW", "until": (now - timedelta(hours=12)).isoformat()}).json()
    assert [item["values"][1]["value"] for item in before["results"]] == [23 * 3600.0]
    after = api.get(URL, {"charger": "CP-WINDOW", "since": (now - timedelta(days=3)).isoformat()}).json()
    assert len(after["results"]) == 3


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:01Z"}, "until"),  # 31 days and a second
        ({"since": "2026-03-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}, "until"),  # before since
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-02-30T00:00:00Z"}, "since"),  # well formed, no such day
        ({"until": "2026-05-01T00:00:00"}, "until"),  # no zone
        ({"charger": "no such charger!"}, "charger"),
        ({"connector": "one"}, "connector"),
        ({"connector": "-1"}, "connector"),
        ({"connector": "40000"}, "connector"),
        ({"measurand": "Current.Imported"}, "measurand"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, params, named) -> None:
    response = api.get(URL, params)

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == [named]


def test_the_window_may_span_31_days(api) -> None:
    MeterReadingFactory(sampled_at=datetime(2026, 1, 31, 23, tzinfo=UTC))

    response = api.get(URL, {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


def test_filters_by_charger_and_connector(api) -> None:
    mine, other = ChargingStationFactory(charge_point_id="CP-MINE"), ChargingStationFactory(charge_point_id="CP-OTHER")
    readings_store(
        [
            MeterReading(station=s, sampled_at=T0 + timedelta(minutes=m), connector_no=c, energy_wh=1.0)
            for s in (mine, other)
            for c in (0, 1, 2)
            for m in range(3)
        ]
    )

    by_charger = api.get(URL, window(charger="CP-MINE")).json()["results"]
    assert keys(by_charger) == expected_keys(MeterReading.objects.filter(station=mine))
    main_meter = api.get(URL, window(charger="CP-MINE", connector="0")).json()["results"]
    assert keys(main_meter) == expected_keys(MeterReading.objects.filter(station=mine, connector_no=0))
    everyones_second = api.get(URL, window(connector="2")).json()["results"]
    assert keys(everyones_second) == expected_keys(MeterReading.objects.filter(connector_no=2))


def test_an_unknown_charger_gives_an_empty_page(api) -> None:
    MeterReadingFactory(sampled_at=T0)

    response = api.get(URL, window(charger="CP-NOBODY"))

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


def test_the_measurand_filter_finds_typed_and_other_values_and_shows_only_those(api) -> None:
    station = ChargingStationFactory(charge_point_id="CP-MEASURE")
    readings_store(
        [
            MeterReading(station=station, sampled_at=T0, connector_no=1, current_l1_a=10.0, energy_wh=5.0),
            MeterReading(station=station, sampled_at=T0, connector_no=2, extra={"Current.Import|L2@Inlet": 7.0}),
            MeterReading(station=station, sampled_at=T0, connector_no=3, offered_a=16.0, energy_wh=6.0),
            MeterReading(station=station, sampled_at=T0, connector_no=4, extra={"Temperature@Body": 30.0}),
        ]
    )

    current = api.get(URL, window(measurand="Current.Import")).json()["results"]
    assert [(item["connector_id"], item["values"]) for item in current] == [
        (1, [{"measurand": "Current.Import", "phase": "L1", "location": "", "value": 10.0, "unit": "A"}]),
        (2, [{"measurand": "Current.Import", "phase": "L2", "location": "Inlet", "value": 7.0, "unit": "A"}]),
    ]
    temperature = api.get(URL, window(measurand="Temperature")).json()["results"]
    assert [item["connector_id"] for item in temperature] == [4]
    assert [item["connector_id"] for item in api.get(URL, window(measurand="SoC")).json()["results"]] == []


def test_a_page_reads_only_the_stations_on_it(api) -> None:
    stations = [ChargingStationFactory(charge_point_id=f"CP-MANY-{n:02d}") for n in range(30)]
    readings_store(
        [MeterReading(station=s, sampled_at=T0, connector_no=1, energy_wh=1.0) for s in (stations[3], stations[17])]
    )

    with CaptureQueriesContext(connection) as queries:
        body = api.get(URL, window()).json()

    assert [item["charge_point_id"] for item in body["results"]] == ["CP-MANY-03", "CP-MANY-17"]
    station_reads = [q["sql"] for q in queries if 'FROM "chargepoint_chargingstation"' in q["sql"]]
    assert len(station_reads) == 1
    ids = re.search(r'"chargepoint_chargingstation"\."id" IN \(([\d, ]+)\)', station_reads[0])
    assert ids is not None, station_reads[0]
    assert {int(i) for i in ids[1].split(", ")} == {stations[3].pk, stations[17].pk}


def test_another_tenants_readings_are_not_listed(api, other_tenant) -> None:
    MeterReadingFactory(sampled_at=T0, station=ChargingStationFactory(charge_point_id="CP-ALPHA"))
    with tenant_context(other_tenant):
        MeterReadingFactory(sampled_at=T0, station=ChargingStationFactory(charge_point_id="CP-BETA"))

    body = api.get(URL, window()).json()

    assert [item["charge_point_id"] for item in body["results"]] == ["CP-ALPHA"]


def test_the_schema_describes_the_item_the_cursor_and_the_filters(api) -> None:
    from drf_spectacular.validation import validate_schema

    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    validate_schema(schema)

    operation = schema["paths"]["/api/v1/readings/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"cursor", "limit", "charger", "connector", "measurand", "since", "until"} <= set(parameters)
    assert "Current.Import" in parameters["measurand"]["schema"]["enum"]
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    item = schema["components"]["schemas"][page]["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[1]
    properties = schema["components"]["schemas"][item]["properties"]
    assert list(properties) == ["charge_point_id", "connector_id", "sampled_at", "context", "values"]
    value = properties["values"]["items"]["$ref"].rsplit("/", 1)[1]
    assert list(schema["components"]["schemas"][value]["properties"]) == [
        "measurand",
        "phase",
        "location",
        "value",
        "unit",
    ]
