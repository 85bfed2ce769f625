"""The portal's pages on a tenant's domain, one namespace across the apps that serve them."""

from django.urls import path

from balancing import group_views
from balancing import views as site_views
from balancing.notifications import views as notification_views
from billing import views as report_views
from chargepoint import views as charger_views
from tenants.accounts import views as account_views

app_name = "portal"

urlpatterns = [
    path("", site_views.overview, name="overview"),
    path("sites/<slug:slug>/", site_views.site_detail, name="site"),
    path("sites/<slug:slug>/chart.json", site_views.site_chart, name="site-chart"),
    path("sites/<slug:slug>/settings/", site_views.site_settings, name="site-settings"),
    path("sites/<slug:slug>/schedules/", site_views.schedule_add, name="schedule-add"),
    path("sites/<slug:slug>/circuits/", site_views.circuit_save, name="circuit-save"),
    path("sites/<slug:slug>/tariffs/", report_views.tariff_upload, name="tariff-upload"),
    path("sites/<slug:slug>/schedules/<int:pk>/delete/", site_views.schedule_delete, name="schedule-delete"),
    path("import/", charger_views.fleet_import_page, name="import"),
    path("chargers/<str:charge_point_id>/", charger_views.charger_detail, name="charger"),
    path("chargers/<str:charge_point_id>/chart.json", charger_views.charger_chart, name="charger-chart"),
    path("chargers/<str:charge_point_id>/act/", charger_views.charger_act, name="charger-act"),
    path("reports/", report_views.reports, name="reports"),
    path("reports/<int:pk>/<str:file_format>/", report_views.report_download, name="report-download"),
    path("reports/regenerate/", report_views.report_regenerate, name="report-regenerate"),
    path("reports/sessions/", report_views.sessions_export_download, name="sessions-export"),
    path("users/", group_views.users, name="users"),
    path("users/<int:pk>/", account_views.user_change, name="user-change"),
    path("users/grants/", group_views.grant_create, name="grant-create"),
    path("users/grants/<int:pk>/delete/", group_views.grant_delete, name="grant-delete"),
    path("users/groups/", group_views.group_create, name="group-create"),
    path("users/groups/<int:pk>/", group_views.group_change, name="group-change"),
    path("users/groups/<int:pk>/delete/", group_views.group_delete, name="group-delete"),
    path("tokens/", account_views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", account_views.token_revoke, name="token-revoke"),
    path("audit/", account_views.audit, name="audit"),
    path("notifications/", notification_views.notifications, name="notifications"),
    path("webhooks/", notification_views.webhooks, name="webhooks"),
    path("webhooks/<int:pk>/act/", notification_views.webhook_act, name="webhook-act"),
    path("webhooks/deliveries/", notification_views.deliveries, name="webhook-deliveries"),
]
