"""The parse-ahead child: the worker's records are the same as parsing in the worker, in order,
and nothing is lost when the child fails or the worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.intake.parse_ahead import ParseAhead
from mailbot.intake.parsing import ParsedMessage, UnparseableMessage, parse_message
from tests.mail_factory import COMPLAINT, make_email

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "mailbot" / "samples").glob("*.eml"))


@pytest.fixture
def ahead() -> ParseAhead:
    pool = ParseAhead()
    yield pool
    pool.close()


def _child_pid(pool: ParseAhead) -> int:
    assert pool._pool is not None
    return next(iter(pool._pool._processes))


def test_records_match_parsing_in_the_worker_in_order(ahead: ParseAhead) -> None:
    datas = [p.read_bytes() for p in SAMPLES] + [b"", b"\x00\x01binary"] * 3
    results = [a.parsed for a in ahead.parse_all(datas)]
    assert len(results) == len(datas)
    for data, got in zip(datas, results, strict=True):
        try:
            expected: ParsedMessage | UnparseableMessage = parse_message(data)
        except UnparseableMessage as exc:
            assert isinstance(got, UnparseableMessage)
            assert got.reason == exc.reason
        else:
            assert got == expected


def test_a_classifying_child_reads_each_message_as_the_worker_would() -> None:
    """With a threshold the child classifies too: the same label, confidence, flags and cues
    as the worker's own classifier on the same text; nothing for mail it could not parse."""
    from mailbot.classifier.model import Classifier
    from mailbot.classifier.text import message_text

    datas = [p.read_bytes() for p in SAMPLES] + [b"\x00\x01binary"]
    pool = ParseAhead(classify_threshold=0.7)
    try:
        got = list(pool.parse_all(datas))
    finally:
        pool.close()
    worker = Classifier.load(threshold=0.7)
    assert got[-1].classified is None
    read = [a for a in got if isinstance(a.parsed, ParsedMessage)]
    assert len(read) >= 10
    for ahead in got:
        if isinstance(ahead.parsed, ParsedMessage):
            assert ahead.classified == worker.classify(message_text(ahead.parsed))
        else:
            assert ahead.classified is None
    assert {a.classified.label for a in read if a.classified} >= {"complaint", "compliment"}


def test_a_killed_child_means_the_worker_parses_and_the_next_batch_has_a_new_child(
    ahead: ParseAhead,
) -> None:
    datas = [make_email(body=COMPLAINT, message_id=f"m{i}@example.org") for i in range(400)]
    ahead.start()
    first = _child_pid(ahead)
    results = (a.parsed for a in ahead.parse_all(datas))
    got = [next(results)]
    os.kill(first, signal.SIGKILL)
    got += list(results)
    assert len(got) == 400
    assert isinstance(got[0], ParsedMessage)
    # Whatever the child had not answered comes back as "parse it yourself", never as an error.
    assert all(r is None or isinstance(r, ParsedMessage) for r in got)
    assert any(r is None for r in got)
    again = [a.parsed for a in ahead.parse_all(datas[:3])]
    assert all(isinstance(r, ParsedMessage) for r in again)
    assert _child_pid(ahead) != first


def test_a_message_that_holds_the_parser_is_answered_unparseable_and_the_rest_go_on() -> None:
    """A chunk that does not come back in time: the child is killed, its messages are tried
    one at a time, and the one that sticks again is unparseable (so quarantined), in order;
    later chunks are answered as usual. Here "stuck" is 8 million lines against a limit of
    half a second (it takes seconds); the other messages take milliseconds."""
    slow = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: long\r\n"
            b"Message-ID: <long@example.org>\r\n\r\n" + b"x\r\n" * 8_000_000)
    datas = [make_email(body=COMPLAINT, message_id=f"m{i}@example.org") for i in range(20)]
    datas.insert(2, slow)
    pool = ParseAhead(stuck_seconds=0.5)
    try:
        pool.start()
        first = _child_pid(pool)
        got = [a.parsed for a in pool.parse_all(datas)]
        assert len(got) == len(datas)
        assert isinstance(got[2], UnparseableMessage)
        assert got[2].reason == "parsing did not finish within 0.5 seconds"
        others = [r for i, r in enumerate(got) if i != 2]
        assert all(isinstance(r, ParsedMessage) for r in others)
        assert [r.message_id for r in others if isinstance(r, ParsedMessage)] == [
            f"m{i}@example.org" for i in range(20)]
        assert _child_pid(pool) != first
        assert _dead(first, timeout=1.0), "the stuck child must be killed, not left parsing"
    finally:
        pool.close()


def _dead(pid: int, timeout: float = 10.0) -> bool:
    """Gone, or a zombie not yet reaped: either way no longer running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_child_exits_when_the_worker_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from mailbot.intake.parse_ahead import ParseAhead\n"
        "if __name__ == '__main__':\n"
        "    pool = ParseAhead()\n"
        "    pool.start()\n"
        "    print(next(iter(pool._pool._processes)), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists(), "the parse-ahead child outlived its worker"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


def test_the_child_gives_back_what_a_burst_of_large_mail_left_free(ahead: ParseAhead) -> None:
    """Asked when the worker goes idle; the same child then goes on parsing."""
    datas = []
    for n in range(60):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "ann@example.org", "cq@example.org", f"s{n}"
        msg.set_content(COMPLAINT)
        msg.add_attachment(os.urandom(300_000), maintype="application", subtype="pdf",
                           filename="letter.pdf")
        datas.append(msg.as_bytes())
    assert all(isinstance(a.parsed, ParsedMessage) for a in ahead.parse_all(datas))
    pid = _child_pid(ahead)
    after_burst = _rss_mb(pid)

    ahead.release_free_memory()
    deadline = time.monotonic() + 10
    while _rss_mb(pid) > after_burst - 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rss_mb(pid) <= after_burst - 3  # about 6 MB of freed buffers went back

    assert [a.parsed.subject for a in ahead.parse_all(datas[:2])
            if isinstance(a.parsed, ParsedMessage)] == ["s0", "s1"]
    assert _child_pid(ahead) == pid


def test_asking_a_child_that_never_started_to_give_back_memory_does_nothing() -> None:
    pool = ParseAhead()
    pool.release_free_memory()
    assert pool._pool is None
