"""The trace domain: replay decisions from TAS, from wherever they come, in one checked form.

Other packages import from here, not from the modules:

- :class:`Trace`, :class:`TraceMeta`, :class:`TraceError`, :func:`read_trace`, :func:`write_trace`: the
  schema and its Parquet files (:mod:`cosim.traces.schema`; docs/traces.md);
- :func:`load_trace` and the :class:`TraceBundle` it returns: the trace a workload names, from its source
  (:mod:`cosim.traces.load`);
- :func:`apply_policy`, :func:`threshold_for_ratio`, :func:`eligible_fraction`,
  :func:`staggered_interval_schedule`: decisions re-made from a trace's TAS (:mod:`cosim.traces.policies`);
- :func:`transfer_trace`, :class:`TransferError`: a captured trace mapped onto other dims
  (:mod:`cosim.traces.transfer`);
- :func:`capture_bundle`, :func:`fill_capture`: a live capture for a workload, and its directory's files
  (:mod:`cosim.traces.capture`; torch loads only when one runs);
- the synthetic generator is :mod:`cosim.traces.synthetic`.

Modules inside the package import each other directly (``cosim.traces.schema``, ...), never this
``__init__``, so the package's module-level imports stay acyclic (``tests/test_import_graph.py``).
"""

from cosim.traces.bundle import TraceBundle
from cosim.traces.capture import capture_bundle, fill_capture
from cosim.traces.load import load_trace
from cosim.traces.policies import (
    apply_policy,
    eligible_fraction,
    staggered_interval_schedule,
    threshold_for_ratio,
)
from cosim.traces.schema import (
    CFG_LAYOUT,
    Trace,
    TraceError,
    TraceMeta,
    read_trace,
    write_trace,
)
from cosim.traces.transfer import TransferError, transfer_trace

__all__ = [
    "CFG_LAYOUT",
    "Trace",
    "TraceBundle",
    "TraceError",
    "TraceMeta",
    "TransferError",
    "apply_policy",
    "capture_bundle",
    "eligible_fraction",
    "fill_capture",
    "load_trace",
    "read_trace",
    "staggered_interval_schedule",
    "threshold_for_ratio",
    "transfer_trace",
    "write_trace",
]
