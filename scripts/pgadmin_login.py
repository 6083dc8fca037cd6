#!/usr/bin/env python3
"""Logs in to pgAdmin 4 the way its login form does; exit 0 if the login was accepted.

    pgadmin_login.py BASE_URL EMAIL < password

The password comes on stdin, never on the command line. Used by tests/pgadmin.rs.
"""
import http.cookiejar
import re
import sys
import urllib.parse
import urllib.request

base, email = sys.argv[1].rstrip("/"), sys.argv[2]
password = sys.stdin.read().strip()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
page = opener.open(base + "/login", timeout=30).read().decode()
m = re.search(r'csrfToken"\s*:\s*"([^"]+)"', page)
if not m:
    sys.exit("no CSRF token on the login page")
form = {"email": email, "password": password, "csrf_token": m.group(1), "internal_button": "Login"}
r = opener.open(base + "/authenticate/login", urllib.parse.urlencode(form).encode(), timeout=30)
landed = r.geturl()
print(landed)
sys.exit(0 if "/browser" in landed else 1)
