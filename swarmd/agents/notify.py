"""In-process wake-ups for readers waiting on a message's reply.

``finish_turn`` runs on the workflow worker's event loop, the API's long-poll on
uvicorn's: :func:`notify` sets every waiter's event on its own loop. Waiters
also re-read the state store now and then, so a reply written by another
replica is seen too (just later).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_mu = threading.Lock()
_waiters: dict[tuple[str, int], list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
    defaultdict(list)
)


def notify(user: str, seq: int) -> None:
    with _mu:
        waiters = _waiters.pop((user, seq), [])
    for loop, event in waiters:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


@contextmanager
def waiter(user: str, seq: int) -> Iterator[asyncio.Event]:
    """An event set when ``(user, seq)`` is notified. Register before reading the
    state, so a reply stored between the read and the wait is not missed."""
    event = asyncio.Event()
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
