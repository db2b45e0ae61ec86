"""Stream several answers at the same time and hand one generator their growing texts.

The Compare tab asks two models at once: each answer streams in its own thread, and
`stream_together` yields snapshots of both texts as chunks arrive (at most every `min_interval`
seconds, so a fast model does not flood the browser). Leaving the generator early (the user
pressed Stop or closed the tab) tells the threads to stop reading.

    .venv/bin/python -m pytest tests/test_web_streaming.py -q
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

_DONE = object()


@dataclass
class SideState:
    text: str = ""
    done: bool = False
    error: BaseException | None = None
    end: object = None
    """The stream's last item when it says why the answer ended (serving.chat.StreamEnd)."""


def stream_together(streams: dict[str, Callable[[], Iterator[str]]], *,
                    min_interval: float = 0.05) -> Iterator[dict[str, SideState]]:
    """Run each `streams[key]()` in a thread; yield {key: SideState} snapshots until all are done.

    The last snapshot has every side `done`; a side whose stream raised has `error` set and keeps the
    text it had. Snapshots are fresh copies, safe to keep.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    states = {key: SideState() for key in streams}

    def pump(key: str, open_stream: Callable[[], Iterator[str]]) -> None:
        try:
            iterator = open_stream()
            try:
                for chunk in iterator:
                    if stop.is_set():
                        break
                    if chunk or hasattr(chunk, "finish_reason"):  # text, or the StreamEnd saying why it ended
                        events.put((key, chunk))
            finally:
                close = getattr(iterator, "close", None)
                if close:
                    close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which reports it
            events.put((key, exc))
        events.put((key, _DONE))

    threads = [threading.Thread(target=pump, args=(k, s), daemon=True, name=f"stream-{k}")
               for k, s in streams.items()]
    for t in threads:
        t.start()
    try:
        pending = len(threads)
        last_yield = 0.0
        dirty = False  # something changed since the last snapshot
        while pending:
            try:
                key, item = events.get(timeout=min_interval)
                while True:
                    state = states[key]
                    if item is _DONE:
                        state.done = True
                        pending -= 1
                    elif isinstance(item, BaseException):
                        state.error = item
                    elif hasattr(item, "finish_reason"):
                        state.end = item
                    else:
                        state.text += item
                    dirty = True
                    key, item = events.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            if dirty and (now - last_yield >= min_interval or not pending):
                last_yield = now
                dirty = False
                yield {k: SideState(s.text, s.done, s.error, s.end) for k, s in states.items()}
    finally:
        stop.set()
