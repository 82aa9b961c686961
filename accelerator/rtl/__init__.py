"""Synthesizable MyHDL twins of the accelerator components, checked cycle for cycle against the cost model.

Designs (each beside its event-model component in ``accelerator/``):

* ``pe_lane.gemv_tile``          -- ``cost.gemv_cycles``          (``core.Core``)
* ``tas_unit.tas_unit``          -- ``cost.tas_cycles``           (``tas_unit.TasUnit``)
* ``drs.drs_scheduler``          -- ``cost.drs_assign_cycles``    (``drs.DrsScheduler``)
* ``replay_cache.replay_cache_ctrl`` -- ``cost.replay_transfer_cycles`` (``replay_cache.ReplayCacheController``)

Tooling: ``harness`` (one stimulus, three views: RTL, event component, cost formula), ``convert``
(Verilog/VHDL and lint), ``cosim`` (the Icarus VPI), ``yosys`` and ``resources`` (pre-place-and-route
estimates, ``estimate(hw)`` / ``fits(hw)``), ``cocheck`` (fixed-point TAS vs the model's float decisions).
Submodules are imported explicitly so that ``accelerator.rtl.resources`` stays cheap for sweeps.
"""
