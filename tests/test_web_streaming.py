"""Two answers streamed at the same time into one generator.

Run: .venv/bin/python -m pytest tests/test_web_streaming.py -q
"""

from __future__ import annotations

import threading
import time

from ui.web.streaming import stream_together


def slow(words, delay, meet=None):
    def gen():
        if meet is not None:
            meet.wait(timeout=10)  # both generators must be running at once to pass this point
        for w in words:
            time.sleep(delay)
            yield w
    return gen


def test_both_streams_progress_at_the_same_time():
    meet = threading.Barrier(2)
    snaps = list(stream_together({"a": slow(["a1 ", "a2 ", "a3"], 0.1, meet),
                                  "b": slow(["b1 ", "b2 ", "b3"], 0.1, meet)}, min_interval=0.01))
    final = snaps[-1]
    assert final["a"].text == "a1 a2 a3" and final["b"].text == "b1 b2 b3"
    assert final["a"].done and final["b"].done
    # Concurrent, not one after the other: both met at the barrier (one after the other would break it),
    # and some snapshot shows both half-way.
    assert not meet.broken
    assert any(0 < len(s["a"].text) < 8 and 0 < len(s["b"].text) < 8 for s in snaps)


def test_a_failing_side_reports_its_error_and_the_other_finishes():
    def broken():
        yield "partial"
        raise RuntimeError("model not loaded")

    final = list(stream_together({"a": slow(["ok"], 0.01), "b": broken}, min_interval=0.01))[-1]
    assert final["a"].text == "ok" and final["a"].error is None
    assert final["b"].text == "partial" and isinstance(final["b"].error, RuntimeError)
    assert final["b"].done


def test_an_error_before_the_first_chunk_is_reported():
    def refuses():
        raise ConnectionError("down")

    final = list(stream_together({"a": refuses, "b": slow(["x"], 0.0)}))[-1]
    assert isinstance(final["a"].error, ConnectionError) and final["a"].done


def test_leaving_early_stops_reading_the_streams():
    closed = threading.Event()

    def endless():
        try:
            while True:
                time.sleep(0.01)
                yield "."
        finally:
            closed.set()

    gen = stream_together({"a": endless, "b": endless}, min_interval=0.01)
    next(gen)
    gen.close()
    assert closed.wait(2.0)


def test_fast_streams_are_batched_into_few_snapshots():
    many = [f"{i} " for i in range(2000)]
    snaps = list(stream_together({"a": lambda: iter(many), "b": lambda: iter(many)}, min_interval=0.05))
    assert snaps[-1]["a"].text == "".join(many)
    assert len(snaps) < 200
