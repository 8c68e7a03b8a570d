"""The OpenAPI document of the HTTP endpoints, served at ``/openapi.json``.

The document ships inside the package (``streamproxy/openapi.json``) so an installed server can
serve it; CI validates it with openapi-spec-validator and tests/test_openapi.py checks it against
the routes and the real responses.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from aiohttp import web

from . import __version__

__all__ = ["openapi_document", "serve_openapi"]


@cache
def _document_text() -> str:
    document: dict[str, Any] = json.loads(files(__package__).joinpath("openapi.json").read_text("utf-8"))
    document["info"]["version"] = __version__
    return json.dumps(document, ensure_ascii=False)


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document, its ``info.version`` set to the running version."""
    loaded: dict[str, Any] = json.loads(_document_text())
    return loaded


async def serve_openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI document."""
    return web.Response(text=_document_text(), content_type="application/json")
