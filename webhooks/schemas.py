"""The JSON the API accepts and returns, as pydantic models.

Request models validate every body (strictly: a date is an ISO string, never a number) and refuse
unknown fields, because the field names are a contract and a misspelt one must not be dropped in
silence. Response models are never used to build responses (``mailbot.services.presenters`` does
that for the CLI and the API alike); they describe them in ``/openapi.json``, and the schema tests
hold the two together.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mailbot.workflow.model import Kind, ServiceArea, Source, Status

#: One line: no control characters at all (names, summaries: they end up in email headers).
LINE = r"^[^\x00-\x1f\x7f]*$"
#: Free text: line breaks and tabs, but no other control characters (and no NUL).
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
#: The HTML "valid email address" syntax, with a dot in the domain; ASCII, so safe in a header.
EMAIL = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
PHONE = r"^[+]?[0-9 ().-]*[0-9][0-9 ().-]*$"
#: A case reference, in any letter case (the cursor ``after`` of GET /api/v1/cases).
CASE_REF = r"^[A-Za-z]{1,10}-[0-9]{4}-[0-9]{1,10}$"
PATTERN_HINTS = {
    LINE: "must be one line of text, without control characters",
    TEXT: "must be text without control characters (line breaks and tabs are fine)",
    EMAIL: "must be an email address such as name@example.org",
    PHONE: "must be a phone number: digits, spaces and + ( ) - .",
    CASE_REF: "must be a case reference such as CSQ-2026-00001: the last case of the page "
              "before (links.next gives the whole URL)",
}
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
#: How old a call may be when it is logged: the call's time starts the statutory clocks.
MAX_CALL_AGE = timedelta(days=30)
#: Allowance for the caller's clock running ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)


def _line(max_length: int) -> Any:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length,
                             pattern=LINE)


def _text(max_length: int) -> Any:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length,
                             pattern=TEXT)


def _iso_time(value: Any) -> Any:
    """An ISO 8601 string to a datetime; unix times and bare dates are refused."""
    if not isinstance(value, str):
        return value  # strict validation refuses it with its own message
    try:
        if ISO_TIME.match(value):
            return datetime.fromisoformat(value)
    except ValueError:
        pass
    raise PydanticCustomError("iso_time", "must be an ISO 8601 time such as 2026-11-23T14:05:00Z")


def _in_range(value: date | datetime) -> date | datetime:
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        raise PydanticCustomError("date_range", "must be between {lo} and {hi}",
                                  {"lo": str(EARLIEST), "hi": str(LATEST)})
    return value


Name = Annotated[str, _line(200)]
Summary = Annotated[str, _line(500)]
Details = Annotated[str, _text(50_000)]
Note = Annotated[str, _text(2_000)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=EMAIL)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40,
                                         pattern=PHONE)]
Day = Annotated[date, AfterValidator(_in_range)]
Moment = Annotated[datetime, BeforeValidator(_iso_time), AfterValidator(_in_range)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of(model: BaseModel, *names: str) -> None:
    if all(getattr(model, n) is None for n in names):
        raise PydanticCustomError(
            "one_of", "give {choices} (at least one)",
            {"choices": " or ".join(names), "field": names[0]},
        )


class PhoneCaseIn(Body):
    """A call logged by phone staff or the contact-centre system."""

    caller_name: Name
    phone: Phone | None = None
    email: Email | None = None
    summary: Summary
    details: Details
    kind: Kind | None = Field(None, description="omit to let the classifier decide")
    incident_date: date | None = Field(None, description="when the events happened")
    service_area: ServiceArea | None = Field(None, description="default social_care")
    logged_by: Name = Field(description="the staff member who took the call")
    called_at: Moment | None = Field(
        None, description="when the call was taken (default now); a time without an offset is "
        "local time. It is the case's time of receipt, so at most 30 days ago.",
    )

    @field_validator("incident_date")
    @classmethod
    def _incident_not_future(cls, value: date | None, info: ValidationInfo) -> date | None:
        now, tz = _clock(info)
        if value is not None and value > now.astimezone(tz).date():
            raise PydanticCustomError("future", "must not be in the future")
        if value is not None and value.year < 1900:
            raise PydanticCustomError("date_range", "must be after 1900")
        return value

    @field_validator("called_at")
    @classmethod
    def _call_in_window(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now, tz = _clock(info)
        moment = value if value.tzinfo else value.replace(tzinfo=tz)
        if moment > now + CLOCK_SKEW:
            raise PydanticCustomError("future", "must not be in the future")
        if moment < now - MAX_CALL_AGE:
            raise PydanticCustomError(
                "too_old", "must be within the last {days} days; log older calls with "
                "`mailbot case open --source phone --received ...`",
                {"days": MAX_CALL_AGE.days},
            )
        return moment

    @model_validator(mode="after")
    def _reachable(self) -> PhoneCaseIn:
        _one_of(self, "phone", "email")
        return self


def _clock(info: ValidationInfo) -> tuple[datetime, ZoneInfo]:
    ctx = info.context or {}
    return ctx.get("now") or datetime.now(UTC), ctx.get("tz") or ZoneInfo("Europe/London")


class AssignIn(Body):
    officer: Name | None = Field(None, description="the stage-1 investigating officer")
    reviewer: Name | None = Field(None, description="the stage-2 reviewer")

    @model_validator(mode="after")
    def _someone(self) -> AssignIn:
        _one_of(self, "officer", "reviewer")
        return self


class RespondIn(Body):
    on: Day | None = Field(None, description="when the response went out (default today)")
    outcome: Note | None = None


class ExtendIn(Body):
    until: Day = Field(description="the new response date")
    reason: Note


class Stage2In(Body):
    requested: Moment | None = Field(None, description="when it was received (default now)")
    reviewer: Name | None = None


class CloseIn(Body):
    outcome: Note | None = None


class ReclassifyIn(Body):
    kind: Kind


#: Cases per page of GET /api/v1/cases: the default, and the most a client may ask for (each
#: case is a row to read and a summary to build; a bigger page is one slow request, not a saving).
DEFAULT_PAGE, MAX_PAGE = 50, 200
PAGE_HINT = f"must be a whole number from 1 to {MAX_PAGE} (default {DEFAULT_PAGE})"


def _page_size(value: Any) -> Any:
    """A query string's ``limit``: digits only (pydantic alone would take "50.0" or " +5 ")."""
    if isinstance(value, str):
        digits = value.isascii() and value.isdigit() and len(value) <= 4
        if not digits or not 1 <= int(value) <= MAX_PAGE:
            raise PydanticCustomError("page_size", PAGE_HINT)
        return int(value)
    return value


class CaseFilters(Body):
    """Query parameters of GET /api/v1/cases (strings, so validated leniently)."""

    status: Status | None = None
    kind: Kind | None = None
    overdue: bool = Field(False, description="only cases past their response date")
    limit: Annotated[int, BeforeValidator(_page_size)] = Field(
        DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="cases per page")
    after: Annotated[str, StringConstraints(strip_whitespace=True, pattern=CASE_REF)] | None = (
        Field(None, description="the reference of the last case of the page before"))


# Responses (documentation only) -----------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Out):
    error: str = Field(description="what went wrong and what to do about it")


class FieldErrors(Out):
    error: str
    fields: dict[str, str] = Field(description="one message per bad field")


class RuleError(Out):
    error: str
    rule: str = Field(description="the complaints-procedure rule that refused the action")


class Links(Out):
    self_: str = Field(alias="self")


class PhoneCaseCreated(Out):
    ref: str
    kind: Kind
    acknowledgement_due: date | None
    response_due: date | None
    links: Links


class CaseSummary(Out):
    ref: str
    kind: Kind
    status: Status
    stage: int
    source: Source
    requester_name: str
    service_area: ServiceArea
    received_at: datetime
    deemed_received: date
    acknowledgement_due: date | None
    response_due: date | None
    officer: str | None
    flags: list[str]


class PageLinks(Out):
    self_: str = Field(alias="self", description="this page")
    next: str | None = Field(description="the next page; null on the last page")


class CaseList(Out):
    cases: list[CaseSummary] = Field(description="in the order the cases were opened")
    links: PageLinks


class Deadlines(Out):
    stage1_acknowledgement_due: date | None
    stage1_acknowledged_on: date | None
    stage1_response_due: date | None
    stage1_responded_on: date | None
    stage2_request_by: date | None
    stage2_requested_at: datetime | None
    stage2_acknowledgement_due: date | None
    stage2_acknowledged_on: date | None
    stage2_response_due: date | None
    stage2_responded_on: date | None


class ClassificationOut(Out):
    label: str | None
    confidence: float | None


class ExtensionOut(Out):
    stage: int
    reason: str
    previous_due: date
    new_due: date
    by: str
    at: datetime


class AuditEntry(Out):
    at: datetime
    actor: str
    action: str
    detail: str


class MessageOut(Out):
    id: int
    direction: str = Field(description='"in" (received or logged) or "out" (sent or queued)')
    status: str = Field(description="case, joined, auto, duplicate; queued, sent or failed")
    at: datetime
    sender: str | None
    recipients: str
    subject: str
    template: str | None
    sent_at: datetime | None
    text: str


class ReminderOut(Out):
    key: str
    send_on: date
    recipient: str
    deadline: str
    deadline_date: date
    escalation: bool


class CaseDetail(CaseSummary):
    requester_email: str | None
    requester_phone: str | None
    summary: str
    incident_date: date | None
    deadlines: Deadlines
    reviewer: str | None
    outcome: str | None
    ombudsman: str | None
    closed_at: datetime | None
    classification: ClassificationOut
    related_ref: str | None
    extensions: list[ExtensionOut]
    audit: list[AuditEntry]
    messages: list[MessageOut]
    reminders: list[ReminderOut]


class Health(Out):
    status: str
    database: str
