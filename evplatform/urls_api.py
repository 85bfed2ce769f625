"""REST API v1 routes (tenant domains)."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from balancing.api import (
    CircuitViewSet,
    LimitOverrideViewSet,
    RunViewSet,
    ScheduleViewSet,
    SiteMeterReadingsView,
    SiteViewSet,
)
from billing.api import ReportViewSet, SessionExportView, TariffViewSet
from chargepoint.api import ChargerViewSet, FleetImportView, ReadingViewSet, SessionViewSet

router = DefaultRouter()
router.register("sites", SiteViewSet, basename="site")
router.register("circuits", CircuitViewSet, basename="circuit")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("overrides", LimitOverrideViewSet, basename="override")
router.register("runs", RunViewSet, basename="run")
router.register("chargers", ChargerViewSet, basename="charger")
router.register("sessions", SessionViewSet, basename="session")
router.register("readings", ReadingViewSet, basename="reading")
router.register("reports", ReportViewSet, basename="report")
router.register("tariffs", TariffViewSet, basename="tariff")

urlpatterns = [
    path("sites/<slug:slug>/meter-readings/", SiteMeterReadingsView.as_view(), name="site-meter-readings"),
    path("exports/sessions/", SessionExportView.as_view(), name="sessions-export"),
    path("imports/fleet/", FleetImportView.as_view(), name="import-fleet"),
    *router.urls,
]
