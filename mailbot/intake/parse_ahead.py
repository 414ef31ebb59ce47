"""Parsing a fetched batch in a second process while the worker writes the one before it.

Parsing is pure CPU work on bytes (``parse_message``: about a sixth of a message's cost in the
worker, benchmarks/README.md) and the worker's other work is mostly the database's and the
mail servers'. On a machine with two cores, handing the parse to a child process lets both
proceed at once: the worker asks for a whole batch, and while it stores message *n* the child is
already parsing *n + 1*. Without ``classify_threshold`` the child imports only the parsing
modules, so it adds tens of megabytes, not hundreds.

Nothing about the outcome changes. The child runs the same ``parse_message``; a message it
cannot read comes back as the same ``UnparseableMessage``; and whenever the child fails in any
other way (it died, the result would not cross the pipe, an unexpected exception) the answer is
``None``, and the worker parses that message itself, so the quarantine records the real error.
A broken child is replaced at the next batch, and a child whose worker was killed exits by
itself within a second. A chunk that has not come back after ``STUCK_SECONDS`` (two minutes;
a chunk takes milliseconds) is stuck on some message: the child is killed and the chunk tried a
message at a time, and the message that sticks again is answered as unparseable, so it goes to
quarantine with that reason and the rest of the inbox goes on. (Parsing it in the worker would
stall the worker instead.)

With ``classify_threshold`` the child also loads the classifier and reads each message's
``message_text`` with it, a chunk at a time (``nlp.pipe``): the same model and threshold as the
worker's, so the same ``Classification``, taken off the worker's core. The child then holds
the model (about 40 MB more); a classification it could not make is None, and the worker
classifies that message itself.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailbot.adapters import heap
from mailbot.intake.parsing import ParsedMessage, UnparseableMessage, parse_message

if TYPE_CHECKING:
    from mailbot.classifier.classification import Classification
    from mailbot.classifier.model import Classifier

log = logging.getLogger(__name__)

#: What the child answers for one message: the record, the reason it is unparseable, or None
#: for "parse it yourself".
Parsed = ParsedMessage | UnparseableMessage | None


@dataclass(frozen=True)
class Ahead:
    """What the child made of one message: the parse, and the classification if asked for."""

    parsed: Parsed = None
    classified: Classification | None = None


#: The messages of each chunk handed to the child, with the answer to come.
Work = list[tuple[Sequence[bytes], "Future[list[Ahead]]"]]

#: Messages per round trip to the child: big enough that the pipe is not the cost, small enough
#: that the worker starts on the first message soon after the fetch.
CHUNK = 8
#: How often the child checks that the worker is still there (see ``_exit_with``).
PARENT_CHECK_SECONDS = 1.0
#: A chunk takes milliseconds (a few hundred for one with a 10 MB attachment); one that has
#: not come back after this long is stuck on some message (see ``ParseAhead._results``).
STUCK_SECONDS = 120.0


def _exit_with(parent: int) -> None:
    """In the child: exit when the worker is gone (killed, say), instead of lingering."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: The child's classifier (``classify_threshold``), loaded once by ``_start_child``.
_classifier: Classifier | None = None


def _start_child(parent: int, classify_threshold: float | None) -> None:
    global _classifier
    _exit_with(parent)
    if classify_threshold is not None:
        from mailbot.classifier.model import Classifier

        _classifier = Classifier.load(threshold=classify_threshold)
    gc.collect()  # as the worker's ``settle``: the model lives as long as the child
    gc.freeze()


def _parse_chunk(datas: Sequence[bytes]) -> list[Ahead]:
    parsed: list[Parsed] = []
    for data in datas:
        try:
            parsed.append(parse_message(data))
        except UnparseableMessage as exc:
            parsed.append(UnparseableMessage(exc.reason))  # without its unpicklable cause
        except Exception:  # the worker parses it again and quarantines with the real error
            log.debug("parse-ahead failed on a message; the worker will parse it", exc_info=True)
            parsed.append(None)
    return [Ahead(p, c) for p, c in zip(parsed, _classify(parsed), strict=True)]


def _classify(parsed: list[Parsed]) -> list[Classification | None]:
    readable = [p for p in parsed if isinstance(p, ParsedMessage)]
    if _classifier is None or not readable:
        return [None] * len(parsed)
    from mailbot.classifier.text import message_text

    try:
        found = iter(list(_classifier.classify_many(message_text(p) for p in readable)))
    except Exception:  # the worker classifies these itself
        log.debug("parse-ahead could not classify a chunk", exc_info=True)
        return [None] * len(parsed)
    return [next(found) if isinstance(p, ParsedMessage) else None for p in parsed]


class ParseAhead:
    """One child process that parses batches ahead of the worker; ``close`` when done."""

    def __init__(self, classify_threshold: float | None = None,
                 stuck_seconds: float = STUCK_SECONDS) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._threshold = classify_threshold
        self._stuck_seconds = stuck_seconds

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the worker runs threads (scheduler, IDLE), and a forked child
            # could inherit a lock one of them held.
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child, initargs=(os.getpid(), self._threshold))
        return self._pool

    def start(self) -> None:
        """Start the child now (it takes a fraction of a second), not at the first batch."""
        try:
            self._executor().submit(_parse_chunk, []).result()
        except Exception:  # parse_all tries again, and falls back to the worker
            log.warning("parse-ahead did not start; will retry at the next batch", exc_info=True)
            self._discard()

    def parse_all(self, datas: Sequence[bytes]) -> Iterator[Ahead]:
        """The results for ``datas``, in order, each as soon as its chunk is done.

        The work is handed to the child now, not when the results are first asked for, so a
        caller can queue the next batch before it writes the current one.
        """
        chunks = [datas[i:i + CHUNK] for i in range(0, len(datas), CHUNK)]
        work = self._submit(chunks)
        if work is None:
            return iter([Ahead() for _ in datas])
        return self._results(work)

    def _submit(self, chunks: Sequence[Sequence[bytes]]) -> Work | None:
        try:
            pool = self._executor()
            return [(chunk, pool.submit(_parse_chunk, chunk)) for chunk in chunks]
        except Exception:  # the pool cannot start (or was shut down): parse in the worker
            log.warning("parse-ahead unavailable; parsing in the worker", exc_info=True)
            self._discard()
            return None

    def _results(self, work: Work) -> Iterator[Ahead]:
        try:
            for n, (chunk, future) in enumerate(work):
                try:
                    yield from future.result(timeout=self._stuck_seconds)
                except TimeoutError:
                    # Some message holds the parser (a pattern that backtracks without end,
                    # say). Parsing it in the worker would stall intake instead, so the child
                    # is killed, the chunk is tried a message at a time, and the one that
                    # sticks again is answered as unparseable: it goes to quarantine, and
                    # everything after it goes on.
                    log.error("parse-ahead: a chunk of %d messages took over %g s; "
                              "trying them one at a time", len(chunk), self._stuck_seconds)
                    self._kill()
                    yield from self._one_at_a_time(chunk)
                    rest = self._submit([c for c, _ in work[n + 1:]])
                    if rest is None:
                        yield from (Ahead() for c, _ in work[n + 1:] for _ in c)
                    else:
                        yield from self._results(rest)
                    return
                except Exception:
                    log.warning("parse-ahead child failed; the worker parses these messages",
                                exc_info=True)
                    self._discard()
                    yield from (Ahead() for _ in chunk)
        finally:
            for _, future in work:
                future.cancel()  # the worker stopped early (the database went away, say)

    def _one_at_a_time(self, chunk: Sequence[bytes]) -> Iterator[Ahead]:
        for data in chunk:
            self.start()  # a fresh child, up before the clock starts
            work = self._submit([[data]])
            if work is None:
                yield Ahead()
                continue
            try:
                yield from work[0][1].result(timeout=self._stuck_seconds)
            except TimeoutError:
                log.error("parse-ahead: a message took over %g s to parse; quarantining it",
                          self._stuck_seconds)
                self._kill()
                yield Ahead(UnparseableMessage(
                    f"parsing did not finish within {self._stuck_seconds:g} seconds"))
            except Exception:
                log.warning("parse-ahead child failed; the worker parses this message",
                            exc_info=True)
                self._discard()
                yield Ahead()

    def _kill(self) -> None:
        """Kill the child (a stuck task cannot be cancelled) and forget the pool."""
        if self._pool is not None:
            # ProcessPoolExecutor has no public kill before Python 3.14; its processes are.
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
        self._discard()

    def _discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def release_free_memory(self) -> None:
        """Ask the child, if it is running, to give its free heap back (``adapters.heap``)."""
        if self._pool is not None:
            try:
                self._pool.submit(heap.release_free_memory)
            except Exception:  # a broken child is replaced at the next batch anyway
                log.debug("could not ask the child to release memory", exc_info=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
