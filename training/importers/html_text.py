"""HTML message bodies (Zendesk html_body, Intercom body) -> plain text with paragraph breaks. Pure.

Uses the stdlib html.parser: block elements end lines, <br> breaks a line, list items get "- ",
script/style are dropped, entities are unescaped, runs of spaces collapse. Text without tags is
only unescaped, so plain bodies keep their own line breaks.
Tested in tests/test_importers_formats.py.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK = {"p", "div", "section", "article", "blockquote", "pre", "ul", "ol", "table", "tr",
          "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "dl", "dt", "dd", "header", "footer"}
_LINE = {"li", "tr", "dt", "dd"}  # one line each, not a paragraph
_SKIP = {"script", "style", "head", "title"}
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK:
            self.parts.append("\n" if tag in _LINE else "\n\n")
            if tag == "li":
                self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "hr":
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK and tag not in _LINE:  # a line-level element ends where the next one starts
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            # Inside HTML, source line breaks are just spaces.
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(body: str) -> str:
    """An HTML fragment -> text: paragraphs separated by a blank line, entities unescaped."""
    if not _TAG.search(body):
        return html.unescape(body).strip()
    parser = _TextCollector()
    parser.feed(body)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
