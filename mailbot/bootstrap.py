"""Wiring: from settings to the engine, sessions and calendar every entry point needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailbot.adapters.database import make_engine, session_factory
from mailbot.config import Settings
from mailbot.workflow.calendar import WorkingCalendar

if TYPE_CHECKING:
    from mailbot.classifier.model import Classifier
    from mailbot.services.intake import IntakeContext
    from mailbot.services.notices import Notifier
    from mailbot.services.reminders import SweepContext


@dataclass
class App:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    calendar: WorkingCalendar

    def close(self) -> None:
        self.engine.dispose()


def build_app(settings: Settings, *, relaxed_commits: bool = False) -> App:
    """``relaxed_commits``: for the worker only (see ``make_engine``); every other entry point
    reports success to a person or a client, so its commits wait for the disk."""
    engine = make_engine(settings.database_url, relaxed_commits=relaxed_commits)
    return App(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        calendar=WorkingCalendar(settings.policy, settings.timezone),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def intake_context(app: App) -> IntakeContext:
    """What processing a message needs. The classifier is loaded when first used (about half
    a second); a missing model is ``ModelMissing`` now, not at the first message."""
    from mailbot.adapters.staff_directory import StaffDirectory
    from mailbot.classifier.classification import require_model
    from mailbot.services.compose import Composer
    from mailbot.services.intake import IntakeContext

    s = app.settings
    require_model()
    threshold = s.policy.triage_confidence_threshold

    def load_classifier() -> Classifier:
        from mailbot.classifier.model import Classifier

        return Classifier.load(threshold=threshold)

    return IntakeContext(
        settings=s,
        calendar=app.calendar,
        composer=Composer(s.team_address, s.timezone),
        staff=StaffDirectory.load(s.staff_directory),
        load_classifier=load_classifier,
    )


def sweep_context(app: App) -> SweepContext:
    from mailbot.adapters.staff_directory import StaffDirectory
    from mailbot.services.compose import Composer
    from mailbot.services.reminders import SweepContext

    s = app.settings
    return SweepContext(settings=s, calendar=app.calendar,
                        composer=Composer(s.team_address, s.timezone),
                        staff=StaffDirectory.load(s.staff_directory))


def notifier(app: App) -> Notifier:
    """Composing and addressing case notices (the extension notice of a staff action)."""
    from mailbot.adapters.staff_directory import StaffDirectory
    from mailbot.services.compose import Composer
    from mailbot.services.notices import Notifier

    s = app.settings
    return Notifier(settings=s, composer=Composer(s.team_address, s.timezone),
                    staff=StaffDirectory.load(s.staff_directory))
