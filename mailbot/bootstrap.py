"""Wiring: from settings to the engine, sessions and calendar every entry point needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.adapters.database import make_engine, session_factory
from mailbot.config import Settings
from mailbot.workflow.calendar import WorkingCalendar


@dataclass
class App:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    calendar: WorkingCalendar

    def close(self) -> None:
        self.engine.dispose()


def build_app(settings: Settings) -> App:
    engine = make_engine(settings.database_url)
    return App(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        calendar=WorkingCalendar(settings.policy, settings.timezone),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
