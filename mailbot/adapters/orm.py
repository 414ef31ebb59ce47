"""Tables, and the imperative mapping of the domain dataclasses onto them.

Imperative mapping (as in *Architecture Patterns with Python*) keeps ``mailbot.workflow`` free of
SQLAlchemy; queries therefore use the ``Table`` columns defined here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry, relationship

from mailbot.workflow.model import AuditEvent, Case, Extension, Kind, ServiceArea, Source, Status


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) as well."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} would be ambiguous in the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EnumText(TypeDecorator[Any]):
    """A ``StrEnum`` stored as its plain value (readable in SQL, no database enum to migrate)."""

    impl = String(20)
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum(value)


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=naming)
mapper_registry = registry(metadata=metadata)

reference_counters = Table(
    "reference_counters",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("last", Integer, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ref", String(20), nullable=False, unique=True),
    Column("kind", EnumText(Kind), nullable=False, index=True),
    Column("source", EnumText(Source), nullable=False),
    Column("status", EnumText(Status), nullable=False, index=True),
    Column("stage", Integer, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("deemed_received", Date, nullable=False),
    Column("requester_name", String(200), nullable=False),
    Column("requester_email", String(320), index=True),
    Column("requester_phone", String(40)),
    Column("service_area", EnumText(ServiceArea), nullable=False),
    Column("summary", Text, nullable=False),
    Column("incident_date", Date),
    Column("acknowledgement_due", Date),
    Column("acknowledged_on", Date),
    Column("response_due", Date),
    Column("responded_on", Date),
    Column("officer", String(200)),
    Column("stage2_request_by", Date),
    Column("stage2_requested_at", UTCDateTime),
    Column("stage2_acknowledgement_due", Date),
    Column("stage2_acknowledged_on", Date),
    Column("stage2_response_due", Date),
    Column("stage2_responded_on", Date),
    Column("reviewer", String(200)),
    Column("outcome", Text),
    Column("ombudsman", String(200)),
    Column("closed_at", UTCDateTime),
    Column("classifier_label", String(20)),
    Column("classifier_confidence", Float),
    Column("flag_out_of_time", Boolean, nullable=False),
    Column("flag_safeguarding", Boolean, nullable=False),
    Column("flag_needs_triage", Boolean, nullable=False),
    Column("flag_late_stage2", Boolean, nullable=False),
    Column("flag_needs_letter", Boolean, nullable=False),
    Column("related_ref", String(20)),
)

case_events = Table(
    "case_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_case_events_case_id_id", "case_id", "id"),
)

case_extensions = Table(
    "case_extensions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False, index=True),
    Column("stage", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("previous_due", Date, nullable=False),
    Column("new_due", Date, nullable=False),
    Column("by", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

_mapped = False


def start_mappers() -> None:
    """Map the domain classes; idempotent, so every entry point may call it."""
    global _mapped
    if _mapped:
        return
    mapper_registry.map_imperatively(AuditEvent, case_events)
    mapper_registry.map_imperatively(Extension, case_extensions)
    mapper_registry.map_imperatively(
        Case,
        cases,
        properties={
            "events": relationship(
                AuditEvent, order_by=case_events.c.id, cascade="all, delete-orphan",
                lazy="selectin",
            ),
            "extensions": relationship(
                Extension, order_by=case_extensions.c.id, cascade="all, delete-orphan",
                lazy="selectin",
            ),
        },
    )
    _mapped = True


# Every message in and out. Mailbox identity (``mailbox_key``) is unique, so a message seen
# before is never processed again; Message-ID plus content hash finds the same message delivered
# twice. Outgoing rows double as the outbox: ``sent_at`` is set once, after the relay accepted it.
messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), index=True),
    Column("direction", String(3), nullable=False),  # "in" or "out"
    Column("mailbox_key", String(500), unique=True),
    Column("message_id", String(500), index=True),
    Column("content_sha256", String(64)),
    Column("outcome", String(20), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("sender", String(320)),
    Column("recipients", Text, nullable=False, default=""),
    Column("subject", Text, nullable=False, default=""),
    Column("sent_date", UTCDateTime),
    Column("received_at", UTCDateTime, nullable=False),
    Column("body_text", Text, nullable=False, default=""),
    Column("classifier_label", String(20)),
    Column("classifier_confidence", Float),
    # Outbox columns (direction "out")
    Column("template", String(40)),
    Column("envelope_from", String(320)),
    Column("raw", LargeBinary),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("last_error", Text),
    Column("sent_at", UTCDateTime),
    Index("ix_messages_outbox_due", "direction", "sent_at", "next_attempt_at"),
    # The auto-reply cap and the duplicate check look these up for every message; without
    # them both scan the whole history (9 msg/s with three years of mail before migration 0005).
    Index("ix_messages_recipients_received_at", "recipients", "received_at"),
    Index("ix_messages_message_id_content_sha256", "message_id", "content_sha256", "direction"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_row_id", Integer, ForeignKey("messages.id"), nullable=False, index=True),
    Column("filename", String(200), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("payload", LargeBinary),
    Column("omitted_reason", Text),
)


# Reminders and escalations: rows, so they survive restarts and are sent exactly once. A
# reminder is planned, then either sent (once, through the outbox), cancelled (its deadline
# moved or was met) or superseded (a later reminder of the same chain was due at the same
# sweep, after downtime).
reminders = Table(
    "reminders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("key", String(120), nullable=False),
    Column("send_on", Date, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("recipient_role", String(20), nullable=False),
    Column("deadline", String(40), nullable=False),
    Column("deadline_date", Date, nullable=False),
    Column("escalation", Boolean, nullable=False),
    Column("state", String(20), nullable=False),
    Column("recipient_address", String(320)),
    Column("outbox_message_id", String(500)),
    Column("changed_at", UTCDateTime, nullable=False),
    UniqueConstraint("case_id", "key", name="uq_reminders_case_id_key"),
    Index("ix_reminders_state_due_at", "state", "due_at"),
)

# Webhook idempotency: the response to the first call with a key (the client's Idempotency-Key,
# or the request's signature when it sends none) is replayed for every retry with that key, so a
# retried or replayed call never opens a second case. ``request_sha256`` tells a retry (same
# body) from a misuse of the key (another body: 409).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("request_sha256", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("case_id", Integer, ForeignKey("cases.id"), index=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Staff API bearer tokens: only a SHA-256 of each token is kept (the token itself is shown once,
# by ``mailbot staff add-token``); ``name`` is who the token acts as in the audit trail.
staff_tokens = Table(
    "staff_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, index=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)
