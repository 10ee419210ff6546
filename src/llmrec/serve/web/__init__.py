"""The web page: one HTML page at ``/``, served by the API app, that talks to ``/v1`` from the browser.

A person signs in with an API key (the admin key, or a user key that sees only its own user), chooses or creates
a user, sees their recommendations with grounded explanations, gives feedback (the list is fetched again and
what changed is marked), and chats with the recommender (answers stream in as server-sent events). The page is a
Jinja2 template and one vanilla-JS file: no build step, no third-party script, and a Content-Security-Policy
that lets it talk to this server only. The key stays in the tab's ``sessionStorage``.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

__all__ = ["CONTENT_SECURITY_POLICY", "mount_page"]

# Scripts, styles and requests from this origin only; no inline script; the page may not be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def mount_page(app: FastAPI, api_prefix: str) -> None:
    """Serve the page at ``/`` and its script and style sheet under ``/static`` on ``app``."""
    from llmrec import __version__

    root = files("llmrec.serve.web")
    templates = Jinja2Templates(directory=str(root / "templates"))
    app.mount("/static", StaticFiles(directory=str(root / "static")), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        """The page (the dataset name is filled in; everything else is fetched with the person's key)."""
        service = request.app.state.service
        context = {"api": api_prefix, "dataset": service.dataset, "version": __version__}
        response = templates.TemplateResponse(request, "index.html", context)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
