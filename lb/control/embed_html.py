#!/usr/bin/env python3
"""Embeds an HTML file in a C++ header as one raw string literal (build step of lb/meson.build).

usage: embed_html.py INPUT.html OUTPUT.h
The header defines `static const char kDashboardHtml[]`. Fails when the file holds the literal's
closing delimiter or is not UTF-8, so the page can never end the literal early.
"""
import sys

DELIM = "ringlb_html"


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        html = f.read()
    if ")" + DELIM + '"' in html:
        sys.exit(f"embed_html.py: {src} contains ){DELIM}\", which would end the raw string")
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"// Generated from {src.rsplit('/', 1)[-1]} by embed_html.py: do not edit.\n")
        f.write("#pragma once\n")
        f.write(f'static const char kDashboardHtml[] = R"{DELIM}(')
        f.write(html)
        f.write(f'){DELIM}";\n')


if __name__ == "__main__":
    main()
