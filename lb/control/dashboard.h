// dashboard: the /dashboard page, one self-contained HTML file (lb/control/dashboard.html: inline
// script and style, no CDN, no build step beyond embedding) compiled into the binary by
// lb/control/embed_html.py. The page holds no data: it asks /rep, /ring and /metrics every second
// with the admin token the operator types in (or gives after '#token=' in its address, which the
// browser never sends), and draws the ring, the replicas and their transitions from the answers.
#pragma once

#include <string_view>

// The page, as embedded at build time.
std::string_view dashboard_html();

// Header lines for the page's response, each ending in \r\n: a Content-Security-Policy that lets
// it talk only to its own origin and load nothing from elsewhere, no sniffing, no caching, no
// framing, no referrer.
std::string_view dashboard_headers();
