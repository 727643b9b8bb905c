#include "lb/control/dashboard.h"

#include "lb/dashboard_html.h"  // generated from lb/control/dashboard.html (lb/meson.build)

std::string_view dashboard_html() {
  return std::string_view(kDashboardHtml, sizeof kDashboardHtml - 1);
}

std::string_view dashboard_headers() {
  return "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
         "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
         "form-action 'none'; frame-ancestors 'none'\r\n"
         "X-Content-Type-Options: nosniff\r\n"
         "Cache-Control: no-store\r\n"
         "X-Frame-Options: DENY\r\n"
         "Referrer-Policy: no-referrer\r\n";
}
