"""The web dashboard served at ``/ojs/admin`` (``docs/dashboard.md``).

A no-build ES-module app (``static/``) that reads and drives the JSON admin API, one HTML
shell for every ``/ojs/admin/*`` URL (:mod:`.pages`), a login form that turns an admin API key
into a stateless session cookie (:mod:`.session`), and strict security headers on every page.
"""
