"""``GET /ojs/docs``: an interactive reference of the API, rendered from its OpenAPI document.

The page is Swagger UI (vendored from the npm package ``swagger-ui-dist``, see
``static/apidocs/README.md``) started by ``ojs-docs.js`` on ``GET /ojs/v1/openapi.json``. All
its files ship in the ``ojs-http`` wheel and are served from a fixed list under
``/ojs/docs/<name>``: nothing else on disk is reachable, and no CDN is involved.

Who may read it (``docs/security.md``): the page and its assets are public, since they are the
same static files on every server and hold nothing about this one; the document they render
stays behind ``openapi.json``'s own access (any role), so on a server with authentication the
page asks for a key before it shows anything. ``HttpSettings(api_docs=False)`` (``ojs-server
--no-api-docs``) does not serve the page at all.

Every URL in the page is relative to it, so it works unchanged when the app is mounted under a
prefix (``Mount("/jobs-api", app=ojs_app)``) or served behind a proxy that strips one. Asset
URLs carry a digest of their content (``?v=``): a response to the current digest may be cached
for a year, any other request revalidates with the ``ETag``.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
from importlib import resources
from string import Template

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ojs_core.errors import NotFoundError

from .routing import PUBLIC, Doc, route

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "Asset", "asset", "assets", "page", "routes"]

#: What the page may load: its own scripts, styles and images, and requests to its own origin
#: (the document, "Try it out"). ``'unsafe-inline'`` for styles only because Swagger UI's React
#: components set ``style`` attributes (swagger-api/swagger-ui#3370, #10655); scripts stay
#: ``'self'``, with no inline script and no eval. ``data:`` images are the icons of
#: ``swagger-ui.css``. No framing (the key form must not be overlaid), no ``<base>``, no form
#: posts.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_PACKAGE_DIR = ("static", "apidocs")
_TEXT = "; charset=utf-8"
#: URL name -> (file under ``static/apidocs``, media type). The only files served.
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript" + _TEXT),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css" + _TEXT),
    "favicon-32x32.png": ("swagger-ui/favicon-32x32.png", "image/png"),
    "LICENSE": ("swagger-ui/LICENSE", "text/plain" + _TEXT),
    "NOTICE": ("swagger-ui/NOTICE", "text/plain" + _TEXT),
    "swagger-ui-bundle.js.LICENSE.txt": (
        "swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
        "text/plain" + _TEXT,
    ),
    "ojs-docs.js": ("ojs-docs.js", "text/javascript" + _TEXT),
    "ojs-docs.css": ("ojs-docs.css", "text/css" + _TEXT),
}
_PAGE = ("index.html", "text/html" + _TEXT)
#: Smaller bodies are not worth a gzip member's overhead (and images are compressed already).
_GZIP_MIN = 1024
_IMMUTABLE = "public, max-age=31536000, immutable"


@attrs.frozen
class Asset:
    """One served file: its bytes (and gzipped bytes when worth it), media type and digest."""

    body: bytes
    media_type: str
    #: The first 16 hex digits of the body's SHA-256: the ``ETag`` and the ``?v=`` of its URL.
    digest: str
    gzipped: bytes | None = None

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        """An asset of ``body``, compressed once here rather than on every response."""
        compress = len(body) >= _GZIP_MIN and not media_type.startswith("image/")
        # mtime=0: the same bytes on every start, so a proxy's cache is not split by restarts.
        gzipped = gzip.compress(body, compresslevel=9, mtime=0) if compress else None
        digest = hashlib.sha256(body).hexdigest()[:16]
        return cls(body, media_type, digest, gzipped)

    @property
    def etag(self) -> str:
        """The strong entity tag of the identity body (a gzipped body gets ``-gz`` appended)."""
        return f'"{self.digest}"'


def _read(name: str) -> bytes:
    return resources.files("ojs_http").joinpath(*_PACKAGE_DIR, name).read_bytes()


@functools.cache
def assets() -> dict[str, Asset]:
    """Every asset by URL name, read from the package on first use (about 2 MB, once)."""
    return {name: Asset.of(_read(file), media_type) for name, (file, media_type) in ASSETS.items()}


@functools.cache
def _page() -> Asset:
    # Only constants of the package go into the template (URL names and digests), never
    # anything of the request, so the page is built once and needs no escaping.
    urls = {
        name.replace(".", "_").replace("-", "_").lower(): f"docs/{name}?v={one.digest}"
        for name, one in assets().items()
    }
    urls["favicon"] = urls["favicon_32x32_png"]
    html = Template(_read(_PAGE[0]).decode("utf-8")).substitute(urls)
    return Asset.of(html.encode("utf-8"), _PAGE[1])


def _accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip;q=0`` refuses it)."""
    for part in header.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _respond(request: Request, one: Asset, cache_control: str) -> Response:
    gzipped = one.gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = one.etag[:-1] + '-gz"' if gzipped else one.etag
    headers = {
        "Cache-Control": cache_control,
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = one.gzipped if gzipped and one.gzipped is not None else one.body
    return Response(body, media_type=one.media_type, headers=headers)


def _etags(header: str) -> set[str]:
    # A weak validator matches too (RFC 9110 §13.1.2: If-None-Match uses weak comparison).
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


async def _loaded() -> None:
    # Reading and compressing the files takes about 0.1 s, once: in a thread, so that the first
    # visit of the page does not hold up the job API's requests on the event loop.
    if _page.cache_info().currsize == 0:
        await asyncio.to_thread(_page)


async def page(request: Request) -> Response:
    """The reference page; revalidated on every visit, since it names the assets' versions."""
    await _loaded()
    return _respond(request, _page(), "no-cache")


async def asset(request: Request) -> Response:
    """One asset of the page by name; 404 for a name not in :data:`ASSETS`."""
    await _loaded()
    one = assets().get(request.path_params["name"])
    if one is None:
        raise NotFoundError("route", request.url.path)
    # Only the URL the page names (the current digest) is cacheable for good; an old or
    # missing ?v= revalidates, so an upgrade is never hidden behind a cached file.
    current = request.query_params.get("v") == one.digest
    return _respond(request, one, _IMMUTABLE if current else "no-cache")


def routes() -> list[BaseRoute]:
    """``GET /ojs/docs`` and ``GET /ojs/docs/{name}``: public, and not in the API document."""
    return [
        route(
            "GET",
            "/ojs/docs",
            page,
            PUBLIC,
            Doc("The API reference page", media_type="text/html", in_document=False),
        ),
        route(
            "GET",
            "/ojs/docs/{name}",
            asset,
            PUBLIC,
            Doc("A file of the API reference page", in_document=False),
        ),
    ]
