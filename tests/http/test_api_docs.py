"""The API docs pages load nothing from another host: /docs and /redoc reference only this
server's own URLs, each of which answers without an API key with the right content type, and
the assets' requests count under one route template in /metrics. (The pages rendering offline
in a real browser: tests/http/test_api_docs_browser.py.)"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]

# what each page needs to render, by the kind of URL
EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
                  ".json": "application/json"}


class References(HTMLParser):
    """Every URL an HTML page loads: src, href and ReDoc's spec-url attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs
                      if name in ("src", "href", "spec-url") and value]


def references(html: str) -> list[str]:
    """The page's URLs, plus the OpenAPI document Swagger UI's inline script loads."""
    parser = References()
    parser.feed(html)
    return parser.urls + re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("api_keys", ["", "docs-key"], ids=["keys off", "keys on"])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_this_servers_files(make_client: MakeClient, page: str,
                                                       api_keys: str) -> None:
    async with await make_client(api_keys=api_keys) as client:  # and no key sent
        reply = await client.get(page)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
        # the browser may load and call only this server (tests/http/test_api_docs_browser.py)
        assert "default-src 'self'" in reply.headers["content-security-policy"]
        html = reply.text
        assert not re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I), (
            f"{page} refers to another host: {html}")
        urls = references(html)
        script = "/docs/assets/swagger-ui-bundle.js" if page == "/docs" else \
            "/docs/assets/redoc.standalone.js"
        assert {script, "/docs/assets/favicon.png", "/openapi.json"} <= set(urls), urls
        for url in urls:
            assert url.startswith("/"), url
            got = await client.get(url)
            assert got.status_code == 200, (url, got.status_code, got.text[:200])
            expected = EXPECTED_TYPES["." + url.rsplit(".", 1)[-1]]
            assert got.headers["content-type"].startswith(expected), (url, got.headers)
            assert len(got.content) > 1000, (url, len(got.content))  # a real file, not a stub
        bundle = (await client.get(script)).text
        assert ("SwaggerUIBundle" if page == "/docs" else "Redoc") in bundle


async def test_unknown_docs_files_are_404_and_counted_under_one_route(
        make_client: MakeClient) -> None:
    async with await make_client() as client:
        for name in ("swagger-ui.css", "swagger-ui-bundle.js", "favicon.png",
                     "redoc.standalone.js"):
            assert (await client.get(f"/docs/assets/{name}")).status_code == 200, name
        for name in ("index.html", "swagger-ui.js.map", "nosuch-1", "nosuch-2"):
            reply = await client.get(f"/docs/assets/{name}")
            assert reply.status_code == 404, (name, reply.status_code)
            assert "no API docs file" in reply.json()["error"] and "/docs" in reply.json()["error"]
        # a path out of the folder matches no route at all
        assert (await client.get("/docs/assets/..%2F..%2Fcore.py")).status_code == 404
        metrics = (await client.get("/metrics")).text
    routes: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "rnnserve_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    route = sample.labels["route"]
                    routes[route] = routes.get(route, 0) + sample.value
    assert routes.get("/docs/assets/{name}") == 8, routes
    assert not any(("swagger" in r or "nosuch" in r or "redoc." in r) for r in routes), routes


@pytest.mark.parametrize("api_keys", ["", "docs-key"], ids=["keys off", "keys on"])
async def test_the_document_declares_the_api_keys_when_they_are_on(
        make_client: MakeClient, api_keys: str) -> None:
    """With keys on, /openapi.json has a bearer scheme on every operation that needs a key
    (Swagger UI's Authorize button, and "Try it out" sends the key); the open ones carry none.
    Without keys the document declares nothing."""
    async with await make_client(api_keys=api_keys) as client:
        schema = (await client.get("/openapi.json")).json()
        paths = schema["paths"]
        step = paths["/v1/sessions/{session_id}/step"]["post"]
        live = paths["/v2/health/live"]["get"]
        if not api_keys:
            assert "securitySchemes" not in schema.get("components", {})
            assert "security" not in step
            return
        scheme = schema["components"]["securitySchemes"]["apiKey"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        assert step["security"] == [{"apiKey": []}]
        assert "security" not in live and "security" not in paths["/metrics"]["get"]
        every = [op for ops in paths.values() for op in ops.values()]
        assert sum("security" in op for op in every) > len(every) // 2
        # and the key the document asks for is the one the server takes
        models = await client.get("/v1/models", headers={"Authorization": f"Bearer {api_keys}"})
        assert models.status_code == 200
