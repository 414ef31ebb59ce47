"""Finding quote headers ("On ... wrote:", "From: ... Sent: ...") without the quadratic cost.

mail-parser-reply splits a message at the quote headers its ``HEADER_REGEX`` finds. That
pattern's "On ... wrote:" alternative, ``On\\s(?:.+?\\s?.+?)\\s?wrote:$``, holds two lazy
``.+?`` side by side, so on a line that starts with "On" and has no reachable "wrote:" at a
line end the regular expression engine tries every split of the line: the time grows with the
square of the line's length. A converted HTML message often puts a whole quoted reply on one
line ("On Mon, ... wrote: > Dear ..."): in the benchmark mail such lines took up to 65 ms, and a
200,000-character one would hold the parser for over ten minutes, stalling the whole intake.

``QuoteHeaders.findall`` gives the same list as the library's ``findall``, at a cost that
grows with the text. It skips text with no cue of any quote header at all (two in three of
the benchmark's messages), searches the other two alternatives with the regular expression
engine as before, and tries the "On ... wrote:" alternative only at the lines that start with
"On", on a window that ends at the last "wrote:" the pattern could reach from there (at most
three line breaks on; its negative look-ahead may read a little further, and the window then
reaches that far). Whatever the pattern reads lies in the window, so the answer is the
library's. One difference is deliberate and bounds the cost: a window is at most
``MAX_HEADER_CHARS`` long. When the full one is longer (a short header followed, within three
lines, by a very long line that also ends in "wrote:"), the alternative is tried on the
stretch up to the last "wrote:" at a line end within that many characters, if there is one:
a header is still found, but where the library would have matched further, it does not.
``tests/test_parsing.py`` compares both on edge cases and generated text, and
``tests/test_corpora.py`` on every corpus file.

No library does this: the pattern is mail-parser-reply's own, and the standard ``re`` engine
has no way to bound backtracking. If a new mail-parser-reply version changes the pattern, the
library's pattern is used unchanged (``QuoteHeaders.exact`` is then False).
"""

from __future__ import annotations

import re
from typing import Any

_FLAGS = re.IGNORECASE | re.MULTILINE

#: mail-parser-reply's English HEADER_REGEX, in its three alternatives.
ON_WROTE = r"^(?!On[.\s]*On\s(.+?\s?.+?)\swrote:)((?:> ?)*On\s(?:.+?\s?.+?)\s?wrote:)$"
HEADER_BLOCK = (
    r"((?:(?:^|\n|\n(?:> ?)*)[* ]*(?:From|Sent|To|Subject|Date|Cc|Organization):[ *]*"
    r"(?:\s{,2}).*){2,}(?:\n.*){,1})"
)
ORIGINAL_MESSAGE = r"(^-{5,} ?Original Message ?-{5,}$)"
LIBRARY_PATTERN = "|".join((ON_WROTE, HEADER_BLOCK, ORIGINAL_MESSAGE))

#: Longest stretch, from the start of the line, that the "On ... wrote:" alternative is tried on.
MAX_HEADER_CHARS = 1000

# A necessary condition for each alternative: "wrote:"; a line that starts, after quote marks
# and emphasis, with a header name and a colon; five dashes and "Original Message".
_CUES = re.compile(
    r"wrote:|^[> *]*(?:From|Sent|To|Subject|Date|Cc|Organization):|^-{5,} ?Original Message",
    _FLAGS,
)
_ON_WROTE = re.compile(ON_WROTE, _FLAGS)
# The other two alternatives, behind one that never matches and holds the first one's two
# groups, so that a match has the same four groups as the library's.
_OTHERS = re.compile("|".join((r"(?!)()()", HEADER_BLOCK, ORIGINAL_MESSAGE)), _FLAGS)
_ON_LINE = re.compile(r"^(?=(?:> ?)*On\s)", _FLAGS)
_LOOKAHEAD_HEAD = re.compile(r"On[.\s]*On\s", re.IGNORECASE)
_WROTE_AT_LINE_END = re.compile(r"wrote:$", _FLAGS)
_WROTE = re.compile(r"wrote:", re.IGNORECASE)


class QuoteHeaders:
    """Stands in for mail-parser-reply's compiled HEADER_REGEX: it only calls ``findall``."""

    def __init__(self, library: re.Pattern[str]) -> None:
        self.library = library
        self.exact = library.pattern == LIBRARY_PATTERN and library.flags == _ON_WROTE.flags

    def findall(self, text: str) -> list[Any]:
        if not self.exact:
            return self.library.findall(text)
        if not _CUES.search(text):
            return []
        on_lines = [m.start() for m in _ON_LINE.finditer(text)]
        found: list[tuple[str, ...]] = []
        pos = next_on = 0
        other = _OTHERS.search(text)
        while True:
            # As the engine scans: the leftmost match wins; at one position, the first
            # alternative ("On ... wrote:") before the other two. A match of the other two
            # found earlier still stands if it starts at or after ``pos`` ("^" looks at the
            # text itself, not at where a search starts); searching again after every
            # "On ... wrote:" would cost the whole rest of the text each time.
            if other is not None and other.start() < pos:
                other = _OTHERS.search(text, pos)
            until = other.start() if other else len(text)
            match = None
            while next_on < len(on_lines) and on_lines[next_on] <= until:
                if on_lines[next_on] >= pos:
                    match = _on_wrote_at(text, on_lines[next_on])
                    if match:
                        break
                next_on += 1
            if match is not None:
                found.append((match.group(1) or "", match.group(2) or "", "", ""))
            elif other is not None:
                found.append(tuple(g or "" for g in other.groups()))
                match = other
            else:
                return found
            pos = match.end()  # no alternative matches the empty string


def _on_wrote_at(text: str, start: int) -> re.Match[str] | None:
    """The "On ... wrote:" alternative tried at the line start ``start``, on its window."""
    # Its match ends at a "wrote:" at a line end, at most three line breaks on (one each for
    # the \s after On and the two \s? of the pattern).
    ends = [m.end() for m in _WROTE_AT_LINE_END.finditer(text, start, _line_end(text, start, 3))]
    if not ends:
        return None
    end = ends[-1]
    # Its negative look-ahead, on a line "On ... On ...", reads up to a "wrote:" at most two
    # line breaks after the second "On " (whose \s may itself be one).
    head = _LOOKAHEAD_HEAD.match(text, start)
    if head is not None:
        for wrote in _WROTE.finditer(text, head.end(), _line_end(text, head.end(), 2)):
            end = max(end, wrote.end())
    if end - start > MAX_HEADER_CHARS:
        near = [e for e in ends if e - start <= MAX_HEADER_CHARS]
        if not near:
            return None
        end = near[-1]
    # Ending the string at a line end (or the text's end) changes nothing the pattern can see
    # in a window that holds all it reads: "$" matched there already; the main part's match
    # and any match of its look-ahead end at a "wrote:" at or before it.
    return _ON_WROTE.match(text, start, _line_end(text, end, 0))


def _line_end(text: str, pos: int, more: int) -> int:
    """Where the line ``more`` lines after the one holding ``pos`` ends: its newline's index."""
    end = text.find("\n", pos)
    for _ in range(more):
        if end == -1:
            break
        end = text.find("\n", end + 1)
    return len(text) if end == -1 else end
