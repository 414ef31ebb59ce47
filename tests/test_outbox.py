"""The outbox's claims (``send_claims``): two flushers at once send every email exactly once,
in queue order per case and recipient, on SQLite and PostgreSQL, and a flusher that finds
every due row claimed by the other stops rather than waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from mailbot.adapters.orm import messages
from mailbot.adapters.smtp import open_transport
from mailbot.bootstrap import App, build_app
from mailbot.config import load_settings
from mailbot.services import cases as case_service
from mailbot.services import outbox
from mailbot.services.compose import Composed
from mailbot.workflow import lifecycle
from mailbot.workflow.model import Kind, Source
from tests.fixtures_smtp import SMTPTestServer

NOW = datetime(2026, 12, 21, 10, 5, tzinfo=UTC)
TEAM = "care.quality@council.example"


@pytest.fixture
def app(mailbot_env: dict[str, str], smtp_server: SMTPTestServer,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("MAILBOT_SMTP_URL", smtp_server.url)
    application = build_app(load_settings())
    yield application
    application.close()


def queue(app: App, people: int, each: int) -> None:
    """``each`` emails to each of ``people`` people, one case each, queued interleaved."""
    with app.sessions.begin() as session:
        case_ids = [case_service.open_case(
            session, lifecycle.NewCase(kind=Kind.COMPLAINT, source=Source.EMAIL,
                                       received_at=NOW, requester_name=f"P{p}"),
            app.calendar, NOW, "test").id for p in range(people)]
    rows = []
    for n in range(each):
        for p in range(people):
            to, mid = f"person{p}@example.org", f"note{n}.person{p}@council.example"
            raw = (f"From: {TEAM}\r\nTo: {to}\r\nSubject: Note {n}\r\n"
                   f"Message-ID: <{mid}>\r\n\r\nNote {n} for person {p}.\r\n").encode()
            rows.append(outbox.outbox_row(
                Composed(mid, f"Note {n}", f"Note {n} for person {p}.", raw), case_id=case_ids[p],
                to=to, envelope_from=TEAM, template="note", now=NOW))
    with app.sessions.begin() as session:
        outbox.enqueue_rows(session, rows)


def test_two_flushers_at_once_send_each_email_once_in_order(
    app: App, smtp_server: SMTPTestServer
) -> None:
    people, each = 30, 8
    queue(app, people, each)
    transport = open_transport(app.settings.smtp)
    results: list[outbox.FlushResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def flusher() -> None:
        try:
            start.wait(timeout=10)
            while True:  # as a worker would, flush after flush, until nothing is left
                # _flush, not flush: flush lets one thread of a process in at a time, and here
                # the two threads stand for two worker processes.
                result = outbox._flush(app.sessions, transport, lambda: NOW, limit=1000)
                results.append(result)
                with app.sessions() as s:
                    if not s.scalar(select(func.count()).select_from(messages)
                                    .where(messages.c.sent_at.is_(None))):
                        return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flusher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    got = smtp_server.wait_for(people * each, timeout=10)
    assert len(got) == people * each
    assert sum(r.sent for r in results) == people * each
    for p in range(people):
        mine = [m for m in got if m.rcpt_tos == [f"person{p}@example.org"]]
        assert len(mine) == each
    # Each email is marked sent once, and in queue order per recipient.
    with app.sessions() as s:
        rows = s.execute(select(messages.c.id, messages.c.recipients, messages.c.sent_at,
                                messages.c.attempts, messages.c.outcome)
                         .order_by(messages.c.id)).all()
    assert {(r.outcome, r.attempts) for r in rows} == {("sent", 1)}
    arrival = {m.message["Message-ID"].strip("<>"): n for n, m in enumerate(got)}
    with app.sessions() as s:
        ids = s.execute(select(messages.c.recipients, messages.c.message_id)
                        .order_by(messages.c.id)).all()
    for p in range(people):
        order = [arrival[mid] for to, mid in ids if to == f"person{p}@example.org"]
        assert order == sorted(order)


def test_a_long_round_goes_over_several_connections_each_person_in_order(
    app: App, smtp_server: SMTPTestServer
) -> None:
    people, each = 40, 3
    queue(app, people, each)
    result = outbox._flush(app.sessions, open_transport(app.settings.smtp), lambda: NOW,
                           limit=1000)
    assert result.sent == people * each
    got = smtp_server.wait_for(people * each, timeout=10)
    assert smtp_server.sessions == outbox.LANES
    # Every person's mail came over one connection, in the order it was queued.
    for p in range(people):
        mine = [m for m in got if m.rcpt_tos == [f"person{p}@example.org"]]
        assert [m.message["Subject"] for m in mine] == [f"Note {n}" for n in range(each)]
        assert len({m.session for m in mine}) == 1
    assert len({m.session for m in got}) == outbox.LANES


def test_a_flusher_finding_every_row_claimed_stops(app: App, smtp_server: SMTPTestServer) -> None:
    """While one flusher holds the claims, another's flush sends nothing and returns at once
    (it does not wait for the first, nor spin on the rows)."""
    queue(app, 3, 1)
    transport = open_transport(app.settings.smtp)
    inside = threading.Event()
    release = threading.Event()

    class SlowTransport:
        """The first flusher's relay: it waits, inside its first send, until told to go on."""

        def connect(self):  # type: ignore[no-untyped-def]
            real = transport.connect()

            class Conn:
                def __enter__(self):  # type: ignore[no-untyped-def]
                    self.conn = real.__enter__()
                    return self

                def __exit__(self, *exc):  # type: ignore[no-untyped-def]
                    return real.__exit__(*exc)

                def send(self, *args):  # type: ignore[no-untyped-def]
                    inside.set()
                    release.wait(timeout=30)
                    self.conn.send(*args)

            return Conn()

    first: list[outbox.FlushResult] = []
    t = threading.Thread(target=lambda: first.append(
        outbox._flush(app.sessions, SlowTransport(), lambda: NOW, limit=1000)))
    t.start()
    assert inside.wait(timeout=30)
    second = outbox._flush(app.sessions, transport, lambda: NOW, limit=1000)
    release.set()
    t.join(timeout=30)
    assert second.sent == 0
    assert first[0].sent == 3
    assert len(smtp_server.wait_for(3)) == 3
