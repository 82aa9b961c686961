"""Chrome/Perfetto trace-event recording of the event model (open timeline.json in ui.perfetto.dev)."""

from __future__ import annotations

import json
from itertools import groupby
from operator import itemgetter
from pathlib import Path

#: Counter values are rounded to this many decimals, so that adding and taking away the same amounts
#: leaves exactly 0 (and one event per real change) rather than floating-point residue.
_COUNTER_DECIMALS = 9


class Timeline:
    """Collects complete ("X") spans and counter ("C") tracks; ``enabled`` is toggled by the driver to
    bound the file size."""

    def __init__(self) -> None:
        self.enabled = True
        #: where the driver is (decode step, frame, layer): added to the args of every span recorded
        self.context: dict = {}
        self._events: list[dict] = []
        self._pids: dict[str, int] = {}
        self._tracks: dict[tuple[str, str], tuple[int, int]] = {}
        #: (process, counter, series) -> (time s, change) pairs, in the order they were recorded
        self._changes: dict[tuple[str, str, str], list[tuple[float, float]]] = {}

    def _pid(self, process: str) -> int:
        return self._pids.setdefault(process, len(self._pids) + 1)

    def _ids(self, process: str, thread: str) -> tuple[int, int]:
        key = (process, thread)
        if key not in self._tracks:
            self._tracks[key] = (self._pid(process), len(self._tracks) + 1)
        return self._tracks[key]

    def span(self, process: str, thread: str, name: str, start_s: float, end_s: float, **args) -> None:
        if not self.enabled or end_s <= start_s:
            return
        pid, tid = self._ids(process, thread)
        ev = {
            "name": name,
            "ph": "X",
            "pid": pid,
            "tid": tid,
            "ts": start_s * 1e6,
            "dur": (end_s - start_s) * 1e6,
        }
        if args or self.context:
            ev["args"] = {**self.context, **args}
        self._events.append(ev)

    def counter(
        self, process: str, name: str, series: str, start_s: float, end_s: float | None, amount: float
    ) -> None:
        """Add ``amount`` to counter ``name`` (in ``series`` units) over [start_s, end_s), or from start_s
        on when ``end_s`` is None. The models report intervals in any order; :meth:`to_json` sums them
        into one event per change of the counter's value."""
        if not self.enabled or not amount or (end_s is not None and end_s <= start_s):
            return
        changes = self._changes.setdefault((process, name, series), [])
        changes.append((start_s, amount))
        if end_s is not None:
            changes.append((end_s, -amount))

    def counters(self) -> list[dict]:
        """The counter events: per track sorted by time, one event where the value changes (changes at
        the same instant coalesced), each carrying the value from then on."""
        events = []
        for (process, name, series), changes in self._changes.items():
            pid = self._pid(process)
            value, last = 0.0, None
            for t, same in groupby(sorted(changes, key=itemgetter(0)), key=itemgetter(0)):
                value += sum(d for _, d in same)
                value = round(value, _COUNTER_DECIMALS) + 0.0  # + 0.0: no -0.0
                if value != last:
                    events.append(
                        {"name": name, "ph": "C", "pid": pid, "ts": t * 1e6, "args": {series: value}}
                    )
                    last = value
        return events

    def to_json(self) -> dict:
        counters = self.counters()  # first: a process may have counters only
        meta = [
            {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": p}}
            for p, pid in self._pids.items()
        ]
        for (_, thread), (pid, tid) in self._tracks.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": thread}})
        return {"traceEvents": meta + self._events + counters, "displayTimeUnit": "ms"}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))
