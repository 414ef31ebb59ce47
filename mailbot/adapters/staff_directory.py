"""The optional staff directory (CSV: name, email, service), for passing compliments on."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StaffMember:
    name: str
    email: str
    service: str


class StaffDirectory:
    def __init__(self, members: list[StaffMember]) -> None:
        self.members = members
        self._by_email = {m.email.lower(): m for m in members}
        self._patterns = [
            (re.compile(r"\b" + r"\s+".join(map(re.escape, m.name.split())) + r"\b", re.I), m)
            for m in members
            if m.name.strip()
        ]

    @classmethod
    def load(cls, path: Path | None) -> StaffDirectory:
        if path is None:
            return cls([])
        members = []
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                name = (row.get("name") or "").strip()
                email = (row.get("email") or "").strip().lower()
                if name and "@" in email:
                    members.append(StaffMember(name, email, (row.get("service") or "").strip()))
        return cls(members)

    def by_email(self, email: str | None) -> StaffMember | None:
        return self._by_email.get((email or "").lower())

    def mentioned_in(self, text: str) -> StaffMember | None:
        """The first staff member named in full in ``text``."""
        for pattern, member in self._patterns:
            if pattern.search(text):
                return member
        return None
