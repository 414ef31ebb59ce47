"""Signed phone-case creation under concurrent load, against gunicorn, on SQLite and PostgreSQL.

This process is the load generator: it starts gunicorn (``webhooks:create_app()``, as the
Procfile does) on a fresh database, then keeps ``--concurrency`` requests in flight for
``--duration`` seconds, each a new call with its own body and a fresh HMAC signature. It reports
requests per second and latency percentiles, and then checks the database: one case and one
queued acknowledgement per 201, nothing else. On Linux it also reports the CPU time per case
(``cpu_ms``) of the gunicorn workers, of the PostgreSQL server's processes (when it runs on this
machine) and of this load generator, read from /proc over the measured run: with everything on
the same cores, that sum is what bounds the rate.

Run: .venv/bin/python benchmarks/webhook_load.py [--database sqlite postgresql]
     [--workers 2] [--concurrency 8] [--duration 20] [--classify] [--json]
PostgreSQL: --postgres-url (default $MAILBOT_TEST_POSTGRES_URL, else the local server); the run
uses a schema of its own and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from mailbot.adapters.database import upgrade
from mailbot.adapters.orm import cases, messages
from webhooks.auth import sign

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.procstat import children, process_table  # noqa: E402

SECRET = "benchmark-secret-0123456789"
HOST = "127.0.0.1"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DETAILS = (
    "Caller says she was promised a call back about her mother's care package two weeks ago "
    "and nobody has called. The home care visits have been late three times this week and "
    "her mother missed her lunchtime medication on Tuesday. She wants the council to sort it "
    "out and to know who is responsible."
)


@dataclass
class Result:
    database: str
    workers: int
    worker_class: str
    concurrency: int
    classify: bool
    seconds: float
    requests: int
    created: int
    errors: dict[str, int]
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cases_in_db: int
    acknowledgements_in_db: int
    cpu_ms: dict[str, float] | None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def database(kind: str, pg_url: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        yield url
        return
    schema = f"mailbot_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_url).set(drivername="postgresql+psycopg",
                               query={"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        upgrade(rendered)
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class CpuSample:
    gunicorn: float
    postgresql: float
    load_generator: float

    @classmethod
    def take(cls, master: int, database: str) -> CpuSample:
        """Processes gone since the last sample count nothing; PostgreSQL's are found by
        command name (backends, WAL writer, ...) when it runs on this machine."""
        table = process_table()
        gunicorn = {master, *children(master)}
        return cls(
            gunicorn=sum(p.cpu_seconds for pid, p in table.items() if pid in gunicorn),
            postgresql=sum(p.cpu_seconds for p in table.values() if p.comm == "postgres")
            if database == "postgresql" else 0.0,
            load_generator=time.process_time(),
        )


def cpu_per_case(before: CpuSample, after: CpuSample, cases: int) -> dict[str, float] | None:
    if not Path("/proc/self/stat").exists() or not cases:
        return None
    per = {k: round((getattr(after, k) - getattr(before, k)) * 1000 / cases, 2)
           for k in ("gunicorn", "postgresql", "load_generator")}
    return {**per, "total": round(sum(per.values()), 2)}


@contextmanager
def gunicorn(url: str, workdir: Path, args: argparse.Namespace) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_DATABASE_URL=url, MAILBOT_WEBHOOK_SECRET=SECRET,
               MAILBOT_VAR_DIR=str(workdir / "var"))
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "--workers", str(args.workers),
           "--worker-class", args.worker_class, "--threads", str(args.threads),
           "--backlog", "2048", "--bind", f"{HOST}:{port}", "--log-level", "warning",
           *shlex.split(args.gunicorn_args), "webhooks:create_app()"]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start: {proc.communicate()[1]}") from None
                time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request_bytes(port: int, n: int, classify: bool, run: str) -> bytes:
    call = {
        "caller_name": f"Caller {n}",
        "phone": "01632 960 001",
        "email": f"caller{n}@example.org",
        "summary": f"No call back about care package ({run}-{n})",
        "details": DETAILS,
        "logged_by": "Pat Phone",
        **({} if classify else {"kind": "complaint"}),
    }
    body = json.dumps(call).encode()
    head = (
        f"POST /api/v1/phone-cases HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Idempotency-Key: {run}-{n}\r\n"
        f"X-Mailbot-Signature: {sign(SECRET, body, int(time.time()))}\r\n\r\n"
    )
    return head.encode() + body


class Client:
    """One connection at a time, kept alive when the server allows it (gthread), else reopened."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, data: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status


async def load(port: int, concurrency: int, seconds: float, classify: bool, run: str,
               ) -> tuple[list[float], Counter[int], float]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = iter(range(10**9))
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        client = Client(port)
        while time.perf_counter() < stop:
            data = request_bytes(port, next(counter), classify, run)
            started = time.perf_counter()
            try:
                status = await client.send(data)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status, client = 0, Client(port)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - began


def counts(engine: Engine) -> tuple[int, int]:
    """Cases, and queued or sent acknowledgements, in the database."""
    with engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(cases)) or 0,
            conn.scalar(select(func.count()).select_from(messages).where(
                messages.c.template == "complaint_acknowledgement")) or 0,
        )


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] * 1000


def bench(kind: str, args: argparse.Namespace) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    try:
        with database(kind, args.postgres_url, workdir) as url, \
                gunicorn(url, workdir, args) as (port, master):
            # Warm-up: every worker connects, imports and (with --classify) loads the model.
            asyncio.run(load(port, args.concurrency, args.warmup, args.classify, "warmup"))
            engine = create_engine(url)
            before = counts(engine)
            cpu_before = CpuSample.take(master, kind)
            lat, statuses, elapsed = asyncio.run(
                load(port, args.concurrency, args.duration, args.classify, "run"))
            cpu_after = CpuSample.take(master, kind)
            after = counts(engine)
            engine.dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    created = statuses.get(201, 0)
    return Result(
        database=kind, workers=args.workers, worker_class=args.worker_class,
        concurrency=args.concurrency, classify=args.classify, seconds=round(elapsed, 2),
        requests=len(lat), created=created,
        errors={str(k): v for k, v in statuses.items() if k != 201},
        rps=round(created / elapsed, 1), p50_ms=round(percentile(lat, 50), 1),
        p90_ms=round(percentile(lat, 90), 1), p99_ms=round(percentile(lat, 99), 1),
        max_ms=round(max(lat) * 1000, 1), cases_in_db=after[0] - before[0],
        acknowledgements_in_db=after[1] - before[1],
        cpu_ms=cpu_per_case(cpu_before, cpu_after, created),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url",
                        default=os.environ.get("MAILBOT_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile: 2)")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=1, help="threads per gthread worker")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--classify", action="store_true",
                        help="omit kind, so that the classifier runs on every call")
    parser.add_argument("--gunicorn-args", default="", help="more gunicorn options, quoted")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(kind, args) for kind in args.database]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print("| database | workers | in flight | classify | cases/s | p50 ms | p90 ms | p99 ms "
          "| max ms | errors | cases in db | CPU ms/case: gunicorn + db + load = total |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        workers = f"{r.workers} {r.worker_class}"
        cpu = (f"{r.cpu_ms['gunicorn']} + {r.cpu_ms['postgresql']} + {r.cpu_ms['load_generator']}"
               f" = {r.cpu_ms['total']}" if r.cpu_ms else "-")
        print(f"| {r.database} | {workers} | {r.concurrency} | {'yes' if r.classify else 'no'} "
              f"| {r.rps} | {r.p50_ms} | {r.p90_ms} | {r.p99_ms} | {r.max_ms} "
              f"| {r.errors or 'none'} | {r.cases_in_db} | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
