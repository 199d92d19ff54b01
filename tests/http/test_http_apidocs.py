"""The API reference page ``GET /ojs/docs``: its files, headers, mount prefix and access.

The app runs over a MemoryBackend through httpx's ASGI transport. No browser runs here: the
page is checked through what a browser would fetch (the URLs it names, resolved against the
page's own URL) and the policy it would enforce.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from importlib import resources
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ojs_http import create_app
from ojs_http.apidocs import ASSETS, CONTENT_SECURITY_POLICY, assets
from ojs_http.auth import ApiKeys
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

KEYS = "admin:KA,producer:KP,worker:KW"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}


@asynccontextmanager
async def serve(
    prefix: str = "", auth: Any = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False, **settings), auth=auth)
    host = Starlette(routes=[Mount(prefix, app=app)]) if prefix else app
    transport = httpx.ASGITransport(app=host)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


class Page(HTMLParser):
    """The URLs a browser would load from the page, and anything inline it would run."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.icons: list[str] = []
        self.links: list[str] = []
        self.openapi: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(f"<{tag} {a}>")
        if tag == "script":
            self._in_script = True
            if "src" not in a:
                self.inline.append("<script> without src")
            else:
                self.scripts.append(a["src"])
        elif tag == "style":
            self.inline.append("<style>")
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a["href"])
        elif tag == "link" and a.get("rel") == "icon":
            self.icons.append(a["href"])
        elif tag == "a":
            self.links.append(a["href"])
        if "data-openapi-url" in a:
            self.openapi.append(a["data-openapi-url"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def csp(header: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for directive in header.split(";"):
        name, *values = directive.split()
        out[name] = values
    return out


# -- the page ----------------------------------------------------------------------------------


async def test_the_page_answers_html_with_a_strict_policy() -> None:
    async with serve() as client:
        response = await client.get("/ojs/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    policy = csp(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    # Scripts only from this origin: no inline script, no eval, no CDN.
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert all(
        v in ("'self'", "'unsafe-inline'", "data:", "'none'") for vs in policy.values() for v in vs
    )
    page = parse(response.text)
    # Nothing inline that the policy would block (and so nothing that needs 'unsafe-inline').
    assert page.inline == []
    assert len(page.scripts) == 2
    assert len(page.styles) == 2
    # Every URL is relative: nothing from another origin, nothing rooted at the host's "/".
    for url in [*page.scripts, *page.styles, *page.icons, *page.links, *page.openapi]:
        assert not urlsplit(url).scheme, url
        assert not url.startswith("/"), url


@pytest.mark.parametrize("prefix", ["", "/jobs-api", "/a/b"])
async def test_every_url_of_the_page_resolves_also_under_a_mount_prefix(prefix: str) -> None:
    async with serve(prefix) as client:
        url = f"http://test{prefix}/ojs/docs"
        page = parse((await client.get(url)).text)
        [openapi] = page.openapi
        # What ojs-docs.js does: new URL(data-openapi-url, document.baseURI).
        document_url = urljoin(url, openapi)
        assert urlsplit(document_url).path == f"{prefix}/ojs/v1/openapi.json"
        document = (await client.get(document_url)).json()
        assert document["servers"] == [{"url": prefix or "/"}]
        for src in [*page.scripts, *page.styles, *page.icons]:
            response = await client.get(urljoin(url, src))
            assert response.status_code == 200, src
            suffix = "." + src.split("?")[0].rsplit(".", 1)[1]
            assert response.headers["content-type"] == TYPES[suffix], src
            # The page names the current version of each file: cacheable for good.
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        for href in page.links:
            assert (await client.get(urljoin(url, href))).status_code == 200, href


async def test_the_page_is_not_an_operation_of_the_api_document() -> None:
    async with serve() as client:
        paths = (await client.get("/ojs/v1/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/ojs/docs")]


async def test_the_page_can_be_turned_off() -> None:
    async with serve(api_docs=False) as client:
        assert (await client.get("/ojs/docs")).status_code == 404
        assert (await client.get("/ojs/docs/ojs-docs.js")).status_code == 404
        assert (await client.get("/ojs/v1/openapi.json")).status_code == 200


# -- the assets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_each_asset_has_its_type_validators_and_compression(name: str) -> None:
    one = assets()[name]
    async with serve() as client:
        plain = await client.get(f"/ojs/docs/{name}", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200
        assert plain.headers["content-type"] == ASSETS[name][1]
        assert plain.content == one.body
        assert "content-encoding" not in plain.headers
        # No ?v= (or an old one): the browser must revalidate, cheaply, with the ETag.
        assert plain.headers["cache-control"] == "no-cache"
        etag = plain.headers["etag"]
        again = await client.get(
            f"/ojs/docs/{name}",
            headers={"If-None-Match": f'W/{etag}, "other"', "Accept-Encoding": "identity"},
        )
        assert again.status_code == 304
        assert again.content == b""
        stale = await client.get(f"/ojs/docs/{name}?v=0123456789abcdef")
        assert stale.headers["cache-control"] == "no-cache"
        zipped = await client.get(f"/ojs/docs/{name}", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["vary"] == "Accept-Encoding"
        if one.gzipped is not None:
            assert zipped.headers["content-encoding"] == "gzip"
            assert zipped.headers["etag"] != etag  # another representation, another tag
            assert zipped.content == one.body  # httpx decodes it
        refused = await client.get(
            f"/ojs/docs/{name}", headers={"Accept-Encoding": "gzip;q=0, identity"}
        )
        assert "content-encoding" not in refused.headers


@pytest.mark.parametrize(
    "path",
    [
        "/ojs/docs/index.html",
        "/ojs/docs/README.md",
        "/ojs/docs/swagger-ui.js",
        "/ojs/docs/..%2Fapidocs.py",
        "/ojs/docs/swagger-ui%2FLICENSE",
        "/ojs/docs/",
    ],
)
async def test_only_the_listed_files_are_served(path: str) -> None:
    async with serve() as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_vendored_files_and_their_licences_are_in_the_package() -> None:
    # The wheel is built from the package directory; .ci/install-check fetches the page and
    # its files from an installed wheel.
    root = resources.files("ojs_http").joinpath("static", "apidocs")
    for file, _ in ASSETS.values():
        assert root.joinpath(file).is_file(), file
    for licence in ("LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"):
        assert root.joinpath("swagger-ui", licence).is_file()
    assert "Apache License" in root.joinpath("swagger-ui", "LICENSE").read_text()
    readme = root.joinpath("README.md").read_text()
    assert "swagger-ui-dist` **5.35.0**" in readme
    assert "nox -s vendor-swagger-ui" in readme


def test_the_start_up_script_stays_within_the_policy() -> None:
    text = assets()["ojs-docs.js"].body.decode()
    # The code, without its comments (which may name what it avoids).
    script = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("//"))
    # No eval-like calls (the policy forbids them) and no HTML built from strings.
    for banned in ("eval(", "new Function", "innerHTML", "document.write", "localStorage"):
        assert banned not in script, banned
    assert "sessionStorage" not in script  # the key stays in the page's memory
    assert re.search(r"validatorUrl:\s*null", script)
    assert re.search(r"queryConfigEnabled:\s*false", script)


# -- access ------------------------------------------------------------------------------------


async def test_with_auth_the_page_is_public_and_the_document_is_not() -> None:
    async with serve("/jobs-api", auth=ApiKeys.load(KEYS)) as client:
        page = await client.get("/jobs-api/ojs/docs")
        assert page.status_code == 200
        for src in [*parse(page.text).scripts, *parse(page.text).styles]:
            asset = await client.get(urljoin("http://test/jobs-api/ojs/docs", src))
            assert asset.status_code == 200, src
        # The page shows nothing of this server until the caller presents a key.
        document = await client.get("/jobs-api/ojs/v1/openapi.json")
        assert document.status_code == 401
        assert document.headers["www-authenticate"].startswith("Bearer")
        for token in ("KA", "KP", "KW"):
            document = await client.get(
                "/jobs-api/ojs/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}
            )
            assert document.status_code == 200
            assert document.json()["components"]["securitySchemes"]["bearer"]
        # A key does not change the page (no per-caller content to cache wrongly).
        with_key = await client.get("/jobs-api/ojs/docs", headers={"Authorization": "Bearer KA"})
        assert with_key.content == page.content


def test_ojs_server_serves_the_page_unless_told_not_to() -> None:
    from test_http_startup import clean_env, run_server

    def check(*args: str, **env: str) -> str:
        done = run_server("--backend", "memory", "--check-config", *args, env=clean_env(**env))
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "api docs on /ojs/docs" in check()
    assert "api docs off" in check("--no-api-docs")
    assert "api docs off" in check(OJS_NO_API_DOCS="1")
