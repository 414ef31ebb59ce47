"""The standard library's MIME parser without one needless scan of every part's body.

When ``email.feedparser`` closes a part of a multipart message it strips the line break at
the end of the part's body with ``NLCRE_eol.search(payload)``, a pattern anchored at the end
(``(\\r\\n|\\r|\\n)\\Z``). ``search`` starts at the first character all the same, so it walks
the whole body, a 300 KB attachment included, to find a match that can only begin in the last
two characters. On the ingest benchmark's mail that walk was 10-15% of ``parse_message``
(benchmarks/README.md).

``install`` replaces the module's pattern with :class:`TailSearch`, which gives the same match
(same span, same groups) by starting the search two characters before the end: a match of at
most two characters that must end at the end cannot begin earlier. It does so only when the
module still holds exactly the pattern this was written for; a Python whose parser differs is
left alone. The standard library offers no hook for this, hence the module attribute.
"""

from __future__ import annotations

import email.feedparser
import re
import sys
from typing import Any

#: The pattern ``email.feedparser`` defines as ``NLCRE_eol`` (CPython 3.11 to 3.13).
END_OF_LINE = re.compile(r"(\r\n|\r|\n)\Z")


class TailSearch:
    """``END_OF_LINE`` whose ``search`` looks only where a match can begin."""

    def search(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        end = min(endpos, len(string))
        return END_OF_LINE.search(string, max(pos, end - 2), endpos)

    def __getattr__(self, name: str) -> object:  # pattern, match, sub, ...: the pattern's own
        return getattr(END_OF_LINE, name)


def install() -> bool:
    """Use :class:`TailSearch` in ``email.feedparser``; False if its pattern is not ours."""
    feedparser: Any = email.feedparser  # NLCRE_eol is not in its type stubs
    current = getattr(feedparser, "NLCRE_eol", None)
    if isinstance(current, TailSearch):
        return True
    if not (isinstance(current, re.Pattern) and current.pattern == END_OF_LINE.pattern
            and current.flags == END_OF_LINE.flags):
        return False
    feedparser.NLCRE_eol = TailSearch()
    return True
