"""``bodycam-sim run --gnss-at``: a simulated camera placed where a test needs it."""

from __future__ import annotations

import pytest

from bodycam.device.errors import UsageError
from bodycam.hw_sim.cmd_run import _lat_lon
from bodycam.hw_sim.sim_run import DEFAULT_ROUTE, shifted_route


def test_the_walk_starts_where_asked_and_keeps_its_shape() -> None:
    assert shifted_route(None) == DEFAULT_ROUTE
    moved = shifted_route((10.0, 20.0))
    assert moved[0][1:3] == pytest.approx((10.0, 20.0))
    for (t0, la0, lo0, a0), (t1, la1, lo1, a1) in zip(DEFAULT_ROUTE, moved, strict=True):
        assert (t0, a0) == (t1, a1)
        assert la1 - 10.0 == pytest.approx(la0 - DEFAULT_ROUTE[0][1])
        assert lo1 - 20.0 == pytest.approx(lo0 - DEFAULT_ROUTE[0][2])


@pytest.mark.parametrize("text", ["52.1", "a,b", "91,0", "0,181", "1,2,3"])
def test_a_bad_position_is_one_clear_error(text: str) -> None:
    with pytest.raises(UsageError, match="--gnss-at"):
        _lat_lon(text)
