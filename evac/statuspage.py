"""The status page ``evac serve`` shows at ``/``: static HTML, JS and CSS on the REST API.

No build step and nothing from the internet: the files in ``evac/static`` are served as
they are, read once at start. The page reads ``/api/v1`` with the session cookie
``POST /api/v1/session`` sets (``evac.apiauth``), and follows each running job's events
stream. The Content-Security-Policy allows scripts, styles and connections to this
origin only, and no framing.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_static() -> dict[str, bytes]:
    """The page's files, from the installed package."""
    folder = resources.files("evac") / "static"
    return {name: (folder / name).read_bytes() for name in FILES}


def routes() -> list[Route]:
    """``GET /`` (the page) and ``GET /static/NAME`` (its script and style)."""
    files = read_static()

    def serve(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    async def page(request: Request) -> Response:
        return serve("index.html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files or name == "index.html":
            return Response(
                b'{"error": "no such file"}\n', status_code=404, media_type="application/json", headers=HEADERS
            )
        return serve(name)

    return [
        Route("/", page, methods=["GET"], include_in_schema=False),
        Route("/static/{name}", static, methods=["GET"], include_in_schema=False),
    ]
