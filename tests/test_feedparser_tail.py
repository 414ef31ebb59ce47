"""``feedparser_tail``: the stdlib MIME parser's end-of-body search, same answers, less work."""

from __future__ import annotations

import email
import email.feedparser
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.intake import feedparser_tail
from mailbot.intake.feedparser_tail import END_OF_LINE, TailSearch

#: ``email.feedparser``; its ``NLCRE_eol`` is not in the type stubs.
FEEDPARSER: Any = email.feedparser


def _same(a: re.Match[str] | None, b: re.Match[str] | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.span(), a.groups(), a.group(0)) == (b.span(), b.groups(), b.group(0))


@pytest.fixture
def stdlib_pattern() -> Iterator[None]:
    """``email.feedparser`` as the standard library ships it, for the length of one test."""
    installed = FEEDPARSER.NLCRE_eol
    FEEDPARSER.NLCRE_eol = END_OF_LINE
    try:
        yield
    finally:
        FEEDPARSER.NLCRE_eol = installed


def test_parsing_installs_it() -> None:
    import mailbot.intake.parsing  # noqa: F401  (installs on import)

    assert isinstance(FEEDPARSER.NLCRE_eol, TailSearch)
    assert feedparser_tail.install()  # installing again changes nothing


@given(st.text(alphabet="a\r\n ", max_size=12), st.integers(-3, 14), st.integers(-3, 16))
def test_tail_search_finds_what_the_pattern_finds(text: str, pos: int, endpos: int) -> None:
    tail = TailSearch()
    assert _same(tail.search(text), END_OF_LINE.search(text))
    assert _same(tail.search(text, pos), END_OF_LINE.search(text, pos))
    assert _same(tail.search(text, pos, endpos), END_OF_LINE.search(text, pos, endpos))


def test_other_uses_of_the_pattern_are_passed_through() -> None:
    tail = TailSearch()
    assert tail.pattern == END_OF_LINE.pattern
    assert _same(tail.match("\r\n"), END_OF_LINE.match("\r\n"))
    assert tail.sub("", "ab\n") == "ab"


def test_an_unknown_pattern_is_left_alone(stdlib_pattern: None) -> None:
    other = re.compile(r"(\r\n|\n)\Z")
    FEEDPARSER.NLCRE_eol = other
    assert not feedparser_tail.install()
    assert FEEDPARSER.NLCRE_eol is other


def _multipart(ending: str) -> bytes:
    """Every place ``feedparser`` strips a line break: a Unix ``From`` line, part bodies, a
    nested multipart's epilogue and the outer one's."""
    body = "line one\r\nline two" + ending
    return (
        f"From a@example.org Mon Nov 23 10:00:00 2026{ending or chr(10)}"
        "From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XX"\r\n\r\npreamble\r\n'
        f"--XX\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
        f'--XX\r\nContent-Type: multipart/alternative; boundary="YY"\r\n\r\n'
        f"--YY\r\nContent-Type: text/plain\r\n\r\n{body}\n"
        f"--YY--\r\ninner epilogue{ending}\r\n"
        f"--XX\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{'QUJD' * 400}{ending}\r\n"
        f"--XX--\r\nepilogue{ending}"
    ).encode()


def _tree(raw: bytes) -> list[object]:
    msg = email.message_from_bytes(raw)

    def defects(m: email.message.Message) -> list[str]:
        return [type(d).__name__ for d in m.defects]

    return [msg.get_unixfrom(), *[
        (p.get_content_type(), p.preamble, p.epilogue,
         None if p.is_multipart() else p.get_payload(), defects(p))
        for p in msg.walk()]]


@pytest.mark.parametrize("ending", ["", "\r\n", "\n", "\r", "\r\n\r\n", "\n\r"])
def test_messages_parse_as_with_the_stdlib_pattern(stdlib_pattern: None, ending: str) -> None:
    raw = _multipart(ending)
    stdlib = _tree(raw)
    assert feedparser_tail.install()
    assert _tree(raw) == stdlib
