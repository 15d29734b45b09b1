"""The recorder's stop latch: the lock its loop sleeps on between ticks. A real lock, real
threads and a real signal; the bounds are generous (seconds), the assertions are about
which way the wait ended."""

from __future__ import annotations

import os
import signal
import threading
import time

from loadmem.recorder.recorder import StopLatch


def _set_later(latch: StopLatch, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        latch.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_wait_times_out_when_not_set():
    latch = StopLatch()
    assert not latch.is_set()
    assert latch.wait(0.05) is False
    assert latch.wait(0) is False  # a zero (or negative) timeout only polls
    assert latch.wait(-1) is False
    assert not latch.is_set()


def test_set_from_another_thread_wakes_the_waiter():
    latch = StopLatch()
    th = _set_later(latch, 0.1)
    t0 = time.monotonic()
    woke = latch.wait(10)
    waited = time.monotonic() - t0
    th.join(5)
    assert woke is True and latch.is_set()
    assert waited < 5, "woken by set(), not by the 10 s timeout"


def test_set_twice_is_harmless_and_wait_stays_open():
    latch = StopLatch()
    latch.set()
    latch.set()  # releasing a released lock is swallowed
    assert latch.is_set()
    for _ in range(3):  # every later wait returns at once, without consuming the latch
        assert latch.wait(10) is True
    latch.set()
    assert latch.wait(0) is True


def test_set_by_several_threads_at_once():
    latch = StopLatch()
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait(5)
        latch.set()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    for th in threads:
        th.start()
    assert latch.wait(10) is True
    for th in threads:
        th.join(5)
        assert not th.is_alive()  # no set() raised or hung
    assert latch.wait(0) is True


def test_a_signal_handler_ends_the_wait():
    """SIGINT/SIGTERM reach the recorder as a handler calling set() in the main thread,
    while that thread sleeps in wait(): the interrupted acquire must see the release."""
    latch = StopLatch()
    calls: list[int] = []

    def handler(signum, frame) -> None:
        calls.append(signum)
        latch.set()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        def send() -> None:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGUSR1)

        th = threading.Thread(target=send, daemon=True)
        th.start()
        t0 = time.monotonic()
        woke = latch.wait(10)
        waited = time.monotonic() - t0
        th.join(5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls == [signal.SIGUSR1]
    assert woke is True and latch.is_set()
    assert waited < 5, "the handler's set() ended the wait, not the 10 s timeout"
