"""URL map of a tenant's domain (its own schema): portal, REST API, sign-in, admin."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from evplatform.admin_sites import tenant_admin_site
from evplatform.api_plumbing import api_not_found
from evplatform.urls_api import urlpatterns as api_v1
from tenants.accounts.views import SignInView, not_offered

urlpatterns = [
    path("", include("evplatform.urls_portal")),
    # Sign-in stays Django's form (with a button per identity provider); allauth serves the rest
    # under accounts/: oidc/<provider id>/login/(callback/), 2fa/ (second factors), reauthenticate/.
    path("accounts/login/", SignInView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    # allauth's own pages for email addresses and passwords are not offered: an admin (or the IdP)
    # sets a person's address, Django's pages above reset passwords.
    re_path(r"^accounts/(email|confirm-email|password)/", not_offered),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
    path("admin/", tenant_admin_site.urls),
]
