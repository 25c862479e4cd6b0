"""The run viewer: a static bundle (plain ES modules, no build step) served at ``/ui``.

The bundle holds no data and no secret: every request it makes goes to the API with
the bearer token the user pasted, kept in the browser's ``sessionStorage`` and sent
only as an ``Authorization`` header (never in a URL). The pages are served with a
strict Content-Security-Policy (scripts and connections to this origin only, no
inline script), so injected markup could neither run nor send the token away.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _Secured:
    """Adds the viewer's security headers to every response of the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", []), *HEADERS]
            await send(msg)

        await self.app(scope, receive, with_headers)


def mount(app: FastAPI) -> None:
    """Serve the viewer at ``/ui/`` (``/ui`` redirects there)."""

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui/", _Secured(StaticFiles(directory=STATIC, html=True)), name="ui")
