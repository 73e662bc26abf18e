"""The memory-map budget (abi/engine/_maps.py) against the process's real /proc/self/maps: modules
(deploys) stop `instance_margin` short of the ceiling, instances may use it; before refusing, the
reclaim hook runs, at most once per interval; every
refusal names vm.max_map_count and is reported in the state."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from abi.engine import MapBudget, ResourceLimitError
from abi.engine import _maps as maps


@pytest.fixture(autouse=True)
def _steady_maps() -> Iterator[None]:
    """These budgets count this process's real mappings: what earlier tests left for the collector
    (retired instances) is freed first, and no collection runs meanwhile to change the count."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _tight(room: int, margin: int) -> MapBudget:
    budget = MapBudget(limit=None, reserve=0)
    in_use = budget.state()["in_use"]
    assert isinstance(in_use, int)
    budget.configure(limit=in_use + room, reserve=0, instance_margin=margin)
    return budget


def test_modules_leave_the_margin_to_instances() -> None:
    budget = _tight(room=40, margin=24)
    budget.admit(8, "load a module", module=True)
    budget.admit(8, "load a module", module=True)  # 16 of the 16 modules may take
    with pytest.raises(ResourceLimitError) as refused:
        budget.admit(8, "load a module", module=True)
    assert refused.value.limit == "vm.max_map_count"
    assert "cannot load a module" in str(refused.value) and "24 for instances" in str(refused.value)
    budget.admit(8, "start an instance")  # the margin is the instances'
    state = budget.state()
    assert state["refused"] == 1 and state["refusing_deploys"] is True and state["refusing"] is False


def test_the_reclaim_hook_runs_before_a_refusal_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maps, "RECLAIM_INTERVAL_S", 0.5)
    budget = _tight(room=10, margin=0)
    calls: list[int] = []
    freed = [0]

    def reclaim() -> int:
        calls.append(freed[0])
        return freed[0]

    budget.reclaim = reclaim
    for _ in range(3):  # the first refusal asks; within the interval the others do not
        with pytest.raises(ResourceLimitError):
            budget.admit(50, "start an instance")
    assert calls == [0] and budget.state()["reclaims"] == 0  # it freed nothing
    time.sleep(0.6)
    freed[0] = 3  # it frees something, but not enough
    for _ in range(3):
        with pytest.raises(ResourceLimitError) as refused:
            budget.admit(50, "start an instance")
    assert calls == [0, 3] and budget.state()["reclaims"] == 1
    assert "vm.max_map_count" in str(refused.value) and budget.state()["refused"] == 6


def test_a_reclaim_that_frees_room_lets_the_admission_through() -> None:
    budget = _tight(room=10, margin=0)
    in_use = budget.state()["in_use"]
    assert isinstance(in_use, int)

    def reclaim() -> int:
        budget.configure(limit=in_use + 100, reserve=0, instance_margin=0)  # as if mappings were freed
        return 1

    budget.reclaim = reclaim
    budget.admit(50, "start an instance")
    assert budget.state()["refused"] == 0 and budget.state()["reclaims"] == 1
