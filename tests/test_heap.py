"""The worker's garbage-collector policy (training.heap) and the DeepSpeed op prebuild (training.prebuild)."""

from __future__ import annotations

import gc
import sys
import types
import weakref

import pytest

from training import heap, prebuild


@pytest.fixture
def collector_restored():  # type: ignore[no-untyped-def]
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def test_settling_collects_start_up_cycles_freezes_the_rest_and_turns_collection_back_on(collector_restored) -> None:
    heap.defer_collection()
    assert not gc.isenabled()

    class Node:
        pass

    cycle = Node()
    cycle.self = cycle  # type: ignore[attr-defined]
    garbage = weakref.ref(cycle)
    del cycle  # cyclic garbage: only the collector frees it
    survivor = Node()
    assert garbage() is not None
    heap.settle_after_start()
    assert garbage() is None  # collected before the freeze, not kept for ever in the frozen generation
    assert gc.isenabled()
    assert not any(o is survivor for o in gc.get_objects())  # frozen: later collections skip it


def test_settling_does_nothing_when_collection_was_never_deferred(collector_restored) -> None:
    gc.enable()
    frozen_before = gc.get_freeze_count()
    heap.settle_after_start()
    assert gc.isenabled() and gc.get_freeze_count() == frozen_before


class FakeBuilder:
    def __init__(self, name: str, error: Exception | None) -> None:
        self.name, self.error = name, error

    def absolute_name(self) -> str:
        return f"deepspeed.ops.{self.name}"

    def load(self, verbose: bool = True) -> object:
        if self.error is not None:
            raise self.error
        return object()


def test_prebuild_builds_the_cpu_ops_and_reports_one_that_fails_without_failing(monkeypatch, capsys) -> None:
    built = []

    class Accelerator:
        def create_op_builder(self, name: str) -> FakeBuilder:
            built.append(name)
            return FakeBuilder(name, RuntimeError("no c++ compiler") if name == "CPUAdamBuilder" else None)

    fake = types.ModuleType("deepspeed.accelerator")
    fake.get_accelerator = Accelerator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deepspeed.accelerator", fake)
    monkeypatch.setattr(prebuild, "select_accelerator", lambda: "cpu")
    assert prebuild.main() == 0
    out, err = capsys.readouterr()
    assert built == ["ShareMemCommBuilder", "CPUAdamBuilder"]
    assert "deepspeed.ops.ShareMemCommBuilder ready" in out
    assert "deepspeed.ops.CPUAdamBuilder not built (no c++ compiler)" in err
