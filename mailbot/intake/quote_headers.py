"""Finding quote headers ("On ... wrote:", "From: ... Sent: ...") without the quadratic cost.

mail-parser-reply splits a message at the quote headers its ``HEADER_REGEX`` finds. That
pattern's "On ... wrote:" alternative, ``On\\s(?:.+?\\s?.+?)\\s?wrote:$``, holds two lazy
``.+?`` side by side, so on a line that starts with "On" and has no reachable "wrote:" at a
line end the regular expression engine tries every split of the line: the time grows with the
square of the line's length. A converted HTML message often puts a whole quoted reply on one
line ("On Mon, ... wrote: > Dear ..."): in the benchmark mail such lines took up to 65 ms, and a
200,000-character one would hold the parser for over ten minutes, stalling the whole intake.

``QuoteHeaders.findall`` gives the same list as the library's ``findall`` in time that grows
with the text. It skips text with no cue of any quote header at all (two messages in three),
searches the other alternatives with the regular expression engine as before, and tries the
"On ... wrote:" alternative only at the lines that start with "On", on a window that ends at
the last "wrote:" the pattern could reach from there (at most three line breaks on). The
window is where the match must lie, so the answer is the library's; the one difference is
deliberate: a window longer than ``MAX_HEADER_CHARS`` is not tried (no client writes a quote
header that long), which is what bounds the cost. ``tests/test_parsing.py`` compares both on
generated text and ``tests/test_corpora.py`` on every corpus file.

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
        self.exact = library.pattern == LIBRARY_PATTERN and library.flags & _FLAGS == _FLAGS

    def findall(self, text: str) -> list[Any]:
        if not _CUES.search(text):
            return []
        if not self.exact:
            return self.library.findall(text)
        on_lines = [m.start() for m in _ON_LINE.finditer(text)]
        found: list[tuple[str, ...]] = []
        pos = next_on = 0
        while True:
            # As the engine scans: the leftmost match wins; at one position, the first
            # alternative ("On ... wrote:") before the other two.
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
    reach = _line_end(text, start, 3)
    end = None
    for end_match in _WROTE_AT_LINE_END.finditer(text, start, reach):
        end = end_match.end()
    if end is None:
        return None
    # Its negative look-ahead, for a line "On ... On ...", reads up to a "wrote:" at most two
    # line breaks after the second "On " (which may itself end with one).
    head = _LOOKAHEAD_HEAD.match(text, start)
    if head is not None:
        for wrote in _WROTE.finditer(text, head.end(), _line_end(text, head.end(), 2)):
            end = max(end, wrote.end())
    if end - start > MAX_HEADER_CHARS:
        return None
    # Ending the string at a line end (or the text's end) changes nothing that the pattern can
    # see: "$" matched there already, and nothing of the match lies beyond.
    return _ON_WROTE.match(text, start, end if end == len(text) else _line_end(text, end, 0))


def _line_end(text: str, pos: int, more: int) -> int:
    """Where the line ``more`` lines after the one holding ``pos`` ends: its newline's index."""
    end = text.find("\n", pos)
    for _ in range(more):
        if end == -1:
            break
        end = text.find("\n", end + 1)
    return len(text) if end == -1 else end
