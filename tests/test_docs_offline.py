"""Swagger UI and ReDoc work without internet: every script and stylesheet they load is served
by the service itself."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest

pytestmark = pytest.mark.anyio

# Far below the real bundles (1-2 MB of JavaScript, ~150 kB of CSS), far above an error page.
MIN_ASSET_BYTES = 50_000


class AssetLinks(HTMLParser):
    """The URLs a page loads: <script src>, and <link href> for stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.others: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(str(values["src"]))
        elif tag == "link" and values.get("href"):
            rel = values.get("rel") or ""
            (self.stylesheets if "stylesheet" in rel else self.others).append(str(values["href"]))


async def page_links(client: httpx.AsyncClient, path: str) -> AssetLinks:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    links = AssetLinks()
    links.feed(response.text)
    assert "cdn." not in response.text and "googleapis" not in response.text
    return links


@pytest.mark.parametrize(
    ("page", "scripts", "stylesheets"),
    [
        ("/docs", ["swagger-ui-bundle.js"], ["swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"], []),
    ],
)
async def test_every_script_and_stylesheet_of_the_docs_is_served_by_the_service(
    client: httpx.AsyncClient, page: str, scripts: list[str], stylesheets: list[str]
) -> None:
    links = await page_links(client, page)

    assert [url.rsplit("/", 1)[-1] for url in links.scripts] == scripts
    assert [url.rsplit("/", 1)[-1] for url in links.stylesheets] == stylesheets
    for url in [*links.scripts, *links.stylesheets, *links.others]:
        assert url.startswith("/"), f"{page} loads {url} from another host"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], url
            assert len(asset.content) > MIN_ASSET_BYTES, url
        elif url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css"), url
            assert len(asset.content) > MIN_ASSET_BYTES, url


async def test_swagger_ui_loads_the_services_own_schema(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    schema = await client.get("/openapi.json")

    assert "url: '/openapi.json'" in page
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/models", "/v1/chat/completions", "/generate", "/models"} <= set(paths)


async def test_a_missing_asset_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs/assets/nothing-here.js")).status_code == 404
