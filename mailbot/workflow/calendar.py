"""Working days and deemed receipt.

A statutory clock counts working days: Monday to Friday, except bank holidays (from the
``holidays`` package, England and Wales by default) and the council's own closure days. A message
that arrives on a non-working day, or after the end of the working day in local time, is deemed
received on the next working day, and the day of receipt is day 0.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays

from mailbot.workflow.policy import Policy


class WorkingCalendar:
    def __init__(self, policy: Policy, tz: ZoneInfo) -> None:
        self.policy = policy
        self.tz = tz
        self._closures = frozenset(policy.closure_dates)
        self._holidays = holidays.country_holidays(
            policy.holiday_country, subdiv=policy.holiday_subdivision
        )

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._holidays and day not in self._closures

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        day += timedelta(days=1)
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def previous_working_day(self, day: date) -> date:
        day -= timedelta(days=1)
        while not self.is_working_day(day):
            day -= timedelta(days=1)
        return day

    def add_working_days(self, start: date, count: int) -> date:
        """The date ``count`` working days after ``start`` (day 0); negative counts go back.

        Counting from a non-working day behaves as if counting from the working day before it,
        so "5 working days from Saturday" is the same as from Friday.
        """
        day = start
        step = self.next_working_day if count >= 0 else self.previous_working_day
        for _ in range(abs(count)):
            day = step(day)
        return day

    def working_days_between(self, start: date, end: date) -> int:
        """Working days from ``start`` to ``end``: positive when end is later, 0 on the same day.

        ``add_working_days(start, working_days_between(start, end)) == end`` whenever ``end`` is a
        working day.
        """
        if end == start:
            return 0
        sign = 1 if end > start else -1
        lo, hi = (start, end) if sign > 0 else (end, start)
        count = 0
        day = lo
        while day < hi:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        return sign * count

    def local(self, moment: datetime) -> datetime:
        """``moment`` in local time; a naive datetime is taken to be local already."""
        if moment.tzinfo is None:
            return moment.replace(tzinfo=self.tz)
        return moment.astimezone(self.tz)

    def deemed_receipt(self, received: datetime) -> date:
        """The working day on which a message received at ``received`` counts as received."""
        local = self.local(received)
        day = local.date()
        if not self.is_working_day(day) or local.time() > self.policy.end_of_day:
            return self.next_working_day(day)
        return day
