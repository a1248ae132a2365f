"""The reconciler's work queue and token bucket, on a clock the tests move by hand."""

from __future__ import annotations

from webhook.adapters.workqueue import Backoff, TokenBucket, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drain(queue: WorkQueue) -> list:
    keys = []
    while (key := queue.get(timeout=0)) is not None:
        keys.append(key)
        queue.done(key)
    return keys


def test_a_key_is_queued_once_however_often_it_is_added():
    queue = WorkQueue(clock=Clock())
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert queue.depth() == 3
    assert drain(queue) == ["a", "b", "c"]


def test_first_puts_a_key_ahead_of_the_others():
    queue = WorkQueue(clock=Clock())
    queue.add("a")
    queue.add("b")
    queue.add("lists", first=True)
    assert drain(queue) == ["lists", "a", "b"]


def test_a_key_added_while_in_progress_waits_for_done_and_is_never_handed_out_twice():
    queue = WorkQueue(clock=Clock())
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout=0) is None  # not to a second worker while the first has it
    queue.done("a")
    assert drain(queue) == ["a"]  # once more, once


def test_a_failed_key_comes_back_after_its_own_exponential_backoff():
    clock = Clock()
    queue = WorkQueue(Backoff(base=1.0, cap=5.0), clock=clock)
    delays = []
    for _ in range(5):
        queue.add("bad")
        assert queue.get(timeout=0) == "bad"
        delays.append(queue.retry("bad"))
        queue.done("bad")
        assert queue.get(timeout=0) is None  # not before its time
        clock.now += delays[-1]
        assert queue.get(timeout=0) == "bad"
        queue.done("bad")
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    queue.forget("bad")  # it succeeded: the next failure starts over
    assert queue.retry("bad") == 1.0


def test_other_keys_are_not_held_up_by_one_in_backoff():
    clock = Clock()
    queue = WorkQueue(Backoff(base=10.0), clock=clock)
    queue.retry("bad")
    queue.add("good")
    assert drain(queue) == ["good"]
    clock.now += 10
    assert drain(queue) == ["bad"]


def test_shut_down_wakes_every_worker_and_queues_nothing_more():
    queue = WorkQueue(clock=Clock())
    queue.add("a")
    queue.shut_down()
    queue.add("b")
    assert queue.get() is None
    assert queue.depth() == 0


def test_the_bucket_lets_a_burst_through_then_paces_at_its_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=3, clock=clock)
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [round(bucket.delay(), 3) for _ in range(3)] == [0.1, 0.2, 0.3]  # each waits its turn
    clock.now += 1.0  # the debt is paid, and 0.4 s of tokens saved up
    assert round(bucket.delay(), 3) == 0.0
    clock.now += 100.0  # never more than the burst saved up
    assert [bucket.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay() > 0
