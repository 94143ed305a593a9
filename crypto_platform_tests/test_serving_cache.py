"""The prediction API's answer cache on its own: validation bound, invalidation by fingerprint, size bound."""

from __future__ import annotations

from crypto_platform.serving.cache import AnswerCache


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_revalidated_after_the_bound_and_recomputed_only_when_the_inputs_changed() -> None:
    tick, stamp, computed = Tick(), ["v1"], []

    def compute() -> str:
        computed.append(stamp[0])
        return f"answer@{stamp[0]}"

    cache = AnswerCache(check_seconds=5, monotonic=tick)
    assert cache.get("k", lambda: stamp[0], compute) == ("answer@v1", False)
    stamp[0] = "v2"  # the file was replaced
    tick.now = 104.9
    assert cache.peek("k") == ("answer@v1",)  # inside the bound: no disk access at all
    assert cache.get("k", lambda: stamp[0], compute) == ("answer@v1", True)
    tick.now = 105.0
    assert cache.peek("k") is None  # the bound has passed: it must be validated
    assert cache.get("k", lambda: stamp[0], compute) == ("answer@v2", False)
    tick.now = 111.0
    assert cache.get("k", lambda: stamp[0], compute) == ("answer@v2", True)  # validated, unchanged
    assert computed == ["v1", "v2"]


def test_size_bound_evicts_the_least_recently_used_and_never_keeps_an_oversized_answer() -> None:
    cache = AnswerCache(check_seconds=60, monotonic=Tick(), max_weight=10)
    for key in "abc":
        cache.get(key, lambda: 0, lambda k=key: [k] * 4, len)
    assert cache.weight == 8 and cache.peek("a") is None and cache.peek("c") == (["c"] * 4,)
    assert cache.get("big", lambda: 0, lambda: list(range(11)), len) == (list(range(11)), False)
    assert cache.peek("big") is None and cache.weight == 8


def test_disabled_cache_always_computes() -> None:
    cache = AnswerCache(check_seconds=60, monotonic=Tick(), enabled=False)
    calls = []
    for _ in range(3):
        assert cache.get("k", lambda: 0, lambda: calls.append(1) or len(calls)) == (len(calls), False)
    assert len(calls) == 3 and cache.peek("k") is None
