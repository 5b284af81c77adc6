"""The service's event loop."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from mailer import loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_the_service_runs_on_uvloop_where_it_is_a_dependency() -> None:
    assert loop.run(_loop_module()).startswith("uvloop")


def test_run_returns_the_result_and_raises_the_error() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    assert loop.run(asyncio.sleep(0, "done")) == "done"
    with pytest.raises(ValueError, match="boom"):
        loop.run(fails())


def test_threads_hand_the_gil_back_to_the_loop_quickly() -> None:
    loop.run(asyncio.sleep(0))
    assert sys.getswitchinterval() == pytest.approx(loop.SWITCH_INTERVAL)


def test_a_settled_heap_is_left_out_of_collections_and_young_ones_are_rarer() -> None:
    thresholds = gc.get_threshold()
    try:
        loop.settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == loop.GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
