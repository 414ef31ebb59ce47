"""The case record and its parts, as plain dataclasses.

The database adapter maps these classes onto tables (SQLAlchemy imperative mapping), so the domain
keeps no dependency on the ORM and can be exercised in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Kind(StrEnum):
    COMPLAINT = "complaint"
    COMPLIMENT = "compliment"
    QUALITY_CONCERN = "quality_concern"
    OTHER = "other"


class Status(StrEnum):
    OPEN = "open"  # stage 1 (or simply open, for cases with no complaint clock)
    RESPONDED = "responded"  # stage-1 response sent; the stage-2 window is running
    STAGE2 = "stage2"  # stage-2 review in progress
    CLOSED = "closed"


class Source(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    LETTER = "letter"
    IN_PERSON = "in_person"
    WEB = "web"


class ServiceArea(StrEnum):
    SOCIAL_CARE = "social_care"
    HOUSING = "housing"
    REGULATED_CARE = "regulated_care"
    OTHER = "other"


@dataclass(eq=False)
class AuditEvent:
    at: datetime
    actor: str
    action: str
    detail: str = ""
    id: int | None = None


@dataclass(eq=False)
class Extension:
    stage: int
    reason: str
    previous_due: date
    new_due: date
    by: str
    at: datetime
    id: int | None = None


@dataclass(eq=False)
class Case:
    ref: str
    kind: Kind
    source: Source
    received_at: datetime
    deemed_received: date
    requester_name: str = ""
    requester_email: str | None = None
    requester_phone: str | None = None
    service_area: ServiceArea = ServiceArea.SOCIAL_CARE
    summary: str = ""
    status: Status = Status.OPEN
    stage: int = 1
    incident_date: date | None = None
    # Stage 1
    acknowledgement_due: date | None = None
    acknowledged_on: date | None = None
    response_due: date | None = None
    responded_on: date | None = None
    officer: str | None = None
    # Stage 2
    stage2_request_by: date | None = None
    stage2_requested_at: datetime | None = None
    stage2_acknowledgement_due: date | None = None
    stage2_acknowledged_on: date | None = None
    stage2_response_due: date | None = None
    stage2_responded_on: date | None = None
    reviewer: str | None = None
    # Outcome
    outcome: str | None = None
    ombudsman: str | None = None
    closed_at: datetime | None = None
    # Classification
    classifier_label: str | None = None
    classifier_confidence: float | None = None
    # Flags
    flag_out_of_time: bool = False
    flag_safeguarding: bool = False
    flag_needs_triage: bool = False
    flag_late_stage2: bool = False
    flag_needs_letter: bool = False
    related_ref: str | None = None
    extensions: list[Extension] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)
    id: int | None = None

    @property
    def has_complaint_clock(self) -> bool:
        return self.kind == Kind.COMPLAINT

    @property
    def current_response_due(self) -> date | None:
        return self.stage2_response_due if self.stage == 2 else self.response_due

    def flags(self) -> list[str]:
        names = {
            "out_of_time": self.flag_out_of_time,
            "safeguarding": self.flag_safeguarding,
            "needs_triage": self.flag_needs_triage,
            "late_stage2_request": self.flag_late_stage2,
            "needs_letter": self.flag_needs_letter,
        }
        return [name for name, on in names.items() if on]

    def record(self, at: datetime, actor: str, action: str, detail: str = "") -> None:
        """Append to the audit trail; events are never edited or removed."""
        self.events.append(AuditEvent(at=at, actor=actor, action=action, detail=detail))
