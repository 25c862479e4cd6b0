"""In-process wake-ups for readers waiting on a message's reply.

The turn's activity runs on the workflow worker's event loop, the API's long-poll
on uvicorn's: :func:`notify` wakes every waiter on its own loop and hands it the
stored message, so a woken reader needs no second read. Waiters also re-read
the state store now and then, so a reply written by another replica is seen too
(just later).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Reply(asyncio.Event):
    """Set when the message's turn ended; ``msg`` is the message as stored (None when
    the notifier did not pass it: read it again)."""

    msg: dict[str, Any] | None = None


_mu = threading.Lock()
_waiters: dict[tuple[str, int], list[tuple[asyncio.AbstractEventLoop, Reply]]] = defaultdict(list)


def notify(user: str, seq: int, msg: dict[str, Any] | None = None) -> None:
    """Message ``seq`` of ``user`` reached a final status (stored as ``msg``)."""
    with _mu:
        waiters = _waiters.pop((user, seq), [])
    for loop, event in waiters:
        if not loop.is_closed():
            event.msg = dict(msg) if msg is not None else None
            loop.call_soon_threadsafe(event.set)


@contextmanager
def waiter(user: str, seq: int) -> Iterator[Reply]:
    """An event set when ``(user, seq)`` is notified. Register before reading the
    state, so a reply stored between the read and the wait is not missed."""
    event = Reply()
    entry = (asyncio.get_running_loop(), event)
    with _mu:
        _waiters[(user, seq)].append(entry)
    try:
        yield event
    finally:
        with _mu:
            lst = _waiters.get((user, seq))
            if lst is not None and entry in lst:
                lst.remove(entry)
                if not lst:
                    del _waiters[(user, seq)]
