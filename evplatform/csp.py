"""Content-Security-Policy relaxations of single pages (the policy itself: settings, CONTENT_SECURITY_POLICY)."""

from csp.decorators import csp_update

# Vega compiles a chart's expressions with Function(): the pages that draw charts allow eval,
# no other page does.
chart_page = csp_update({"script-src": ["'unsafe-eval'"]})
