"""FastCar co-design simulator. The public API (docs/api.md): ``load``, ``run``, ``Result``."""

from cosim.api import InputError, Result, Workload, WorkloadError, load, run

__all__ = ["InputError", "Result", "Workload", "WorkloadError", "load", "run"]
