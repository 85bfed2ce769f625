"""The OpenAPI schema (/api/schema/) says what the API really answers and takes."""

import pytest
from django.test import Client

from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(make_user) -> dict:
    from drf_spectacular.validation import validate_schema

    user, _ = make_user(Role.SITE_VIEWER)
    _, raw = api_token_create(user=user, name="test")
    client = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    validate_schema(body)
    return body


def component(schema: dict, name: str) -> dict:
    return schema["components"]["schemas"][name]["properties"]


def parameters(schema: dict, path: str, method: str = "get") -> dict[str, dict]:
    return {p["name"]: p["schema"] for p in schema["paths"][path][method].get("parameters", [])}


def test_fields_that_can_be_null_are_declared_nullable(schema) -> None:
    assert component(schema, "Circuit")["parent_name"]["nullable"] is True
    assert component(schema, "Charger")["circuit"]["nullable"] is True


def test_a_report_month_is_declared_as_the_yyyy_mm_text_it_is(schema) -> None:
    month = component(schema, "Report")["month"]

    assert month["type"] == "string"
    assert "format" not in month
    assert month["pattern"] == r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"


def test_a_report_download_is_declared_as_its_files_media_types(schema) -> None:
    ok = schema["paths"]["/api/v1/reports/{id}/download/"]["get"]["responses"]["200"]["content"]

    assert set(ok) == {
        "text/csv",
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
    assert all(media["schema"] == {"type": "string", "format": "binary"} for media in ok.values())


@pytest.mark.parametrize(
    "path", ["/api/v1/runs/", "/api/v1/sessions/", "/api/v1/readings/", "/api/v1/sites/{slug}/meter-readings/"]
)
def test_time_bounds_are_declared_as_date_times(schema, path) -> None:
    declared = parameters(schema, path)

    assert declared["since"]["format"] == declared["until"]["format"] == "date-time"


def test_paging_parameters_declare_their_bounds(schema) -> None:
    sites = parameters(schema, "/api/v1/sites/")
    readings = parameters(schema, "/api/v1/readings/")

    assert (sites["limit"]["minimum"], sites["limit"]["maximum"]) == (1, 1000)
    assert (sites["offset"]["minimum"], sites["offset"]["maximum"]) == (0, 2**31 - 1)
    assert (readings["limit"]["minimum"], readings["limit"]["maximum"]) == (1, 1000)


def test_filters_declare_what_they_take(schema) -> None:
    readings = parameters(schema, "/api/v1/readings/")
    assert (readings["connector"]["minimum"], readings["connector"]["maximum"]) == (0, 32767)
    assert readings["charger"]["pattern"] == r"^[A-Za-z0-9._~-]{1,48}$"
    assert parameters(schema, "/api/v1/circuits/")["site"]["pattern"] == r"^[-a-zA-Z0-9_]+$"
    assert parameters(schema, "/api/v1/reports/")["month"]["pattern"] == r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"


def test_wall_clock_times_and_decimals_are_declared_as_the_text_taken(schema) -> None:
    schedule = component(schema, "ScheduleRequest")
    site = component(schema, "PatchedSiteRequest")

    assert "format" not in schedule["start_time"]  # OpenAPI's "time" needs a zone offset; these have none
    assert schedule["start_time"]["pattern"].startswith("^")
    assert schedule["weekdays"]["pattern"] == "^[0-6]{1,7}$"
    assert site["limit_a"]["pattern"] == r"^(?:(?:\d{1,6}(?:\.\d{0,1})?|\.\d{1,1}))$"  # no sign, no ""
    assert site["max_raise_a"]["pattern"].startswith("^(?:|")  # "" clears it


def test_every_operation_declares_its_error_answers_in_the_one_error_shape(schema) -> None:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    assert set(component(schema, "Error")["error"]["properties"]) == {"status", "code", "message", "fields"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for code in ("401", "403", "429"):
                assert responses[code]["content"] == error, (method, path, code)
            if "{" in path:
                assert responses["404"]["content"] == error, (method, path)
            if "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", [])):
                assert responses["400"]["content"] == error, (method, path)


def test_a_charger_command_declares_its_409(schema) -> None:
    assert "409" in schema["paths"]["/api/v1/chargers/{charge_point_id}/commands/"]["post"]["responses"]
