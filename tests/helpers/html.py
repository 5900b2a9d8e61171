"""Reads the HTML report: table cells by table id, the tags used, the text inside <svg>."""

from __future__ import annotations

from html.parser import HTMLParser


class PageParser(HTMLParser):
    """Collects table cells by table id, the tags seen, and the text inside <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self.svg_text: list[str] = []
        self._table: str | None = None
        self._in_cell = False
        self._in_svg = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self.tables[self._table][-1].append("")
            self._in_cell = True
        elif tag == "svg":
            self._in_svg = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._in_cell = False
        elif tag == "svg":
            self._in_svg = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._table is not None:
            self.tables[self._table][-1][-1] += data
        if self._in_svg:
            self.svg_text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser
