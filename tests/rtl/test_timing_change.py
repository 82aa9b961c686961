"""A documented timing change makes the cross-check fail until the cost model is updated.

The GEMV tile's ``EXTRA`` parameter adds a product pipeline register (e.g. the DSP48E2 MREG, for a higher
clock). The RTL then takes one more cycle per instruction; the cost model only agrees again once the
hardware spec says so (``HardwareSpec.pe_pipeline_cycles`` 3 -> 4). Likewise, changing a cost-model
constant without changing the RTL (``TAS_TAIL_STAGES``) breaks the TAS cross-check.
"""

from __future__ import annotations

import numpy as np
import pytest

import accelerator.cost as cost
from accelerator.rtl.harness import check
from accelerator.rtl.pe_lane import gemv_case
from accelerator.rtl.tas_unit import tas_case


def test_extra_pipeline_stage_fails_until_spec_updated() -> None:
    bench = gemv_case(np.random.default_rng(11), extra=1)
    before = check(bench)
    assert not before.cycles_equal
    assert [r - c for r, c in zip(before.rtl_cycles, before.cost_cycles, strict=True)] == [1] * len(
        bench.jobs
    )
    assert before.outputs_equal  # the change is in timing only

    bench.spec_pipeline_cycles = 4  # the cost-model update: HardwareSpec(pe_pipeline_cycles=4)
    after = check(bench)
    assert after.ok


def test_cost_constant_change_without_rtl_change_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = tas_case(np.random.default_rng(5))
    assert check(bench).ok
    monkeypatch.setattr(cost, "TAS_TAIL_STAGES", cost.TAS_TAIL_STAGES + 1)
    assert not check(bench).cycles_equal
