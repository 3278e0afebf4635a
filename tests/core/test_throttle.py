"""Throttle: the views' update rate stays capped."""

from __future__ import annotations

import pytest

from letta_nb.core.throttle import Throttle


def test_throttle_caps_the_rate() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    sent = 0
    for _ in range(10_000):  # 10,000 chunks over one second
        now[0] += 0.0001
        sent += throttle.ready()
    assert 9 <= sent <= 11
    assert throttle.wait_time() <= 0.1
    with pytest.raises(ValueError):
        Throttle(0)
