"""The real `mailbot run` process on the embedded defaults: it answers mail and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.mail_factory import COMPLAINT, make_email


def test_worker_answers_maildir_mail_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    mailbot = str(Path(sys.executable).with_name("mailbot"))
    subprocess.run([mailbot, "init-db"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    worker = subprocess.Popen([mailbot, "run", "--idle-timeout", "1"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        inbox = tmp_path / "var" / "mail" / "inbox"
        sent = tmp_path / "var" / "mail" / "sent" / "new"
        (inbox / "new").mkdir(parents=True, exist_ok=True)
        (inbox / "tmp").mkdir(exist_ok=True)
        (inbox / "tmp" / "m1").write_bytes(make_email(body=COMPLAINT, message_id="w1@example.org"))
        os.rename(inbox / "tmp" / "m1", inbox / "new" / "1700000000.m1.test")
        deadline = time.monotonic() + 30
        replies: list[Path] = []
        while time.monotonic() < deadline and not replies:
            replies = [p for p in sent.glob("*")] if sent.is_dir() else []
            replies = [p for p in replies
                       if b"X-Mailbot-Envelope-To: ann@example.org" in p.read_bytes()]
            time.sleep(0.2)
        assert replies, "no acknowledgement was written to the sent Maildir"
        assert b"We have received your complaint [CSQ-" in replies[0].read_bytes()
        assert list((inbox / ".Processed" / "cur").glob("*"))  # moved, not deleted
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    assert code == 0, worker.stderr.read() if worker.stderr else ""
