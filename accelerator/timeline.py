"""Chrome/Perfetto trace-event recording of the event model (open timeline.json in ui.perfetto.dev)."""

from __future__ import annotations

import json
from pathlib import Path


class Timeline:
    """Collects complete ("X") events; ``enabled`` is toggled by the driver to bound the file size."""

    def __init__(self) -> None:
        self.enabled = True
        #: where the driver is (decode step, frame, layer): added to the args of every span recorded
        self.context: dict = {}
        self._events: list[dict] = []
        self._tracks: dict[tuple[str, str], tuple[int, int]] = {}

    def _ids(self, process: str, thread: str) -> tuple[int, int]:
        key = (process, thread)
        if key not in self._tracks:
            pids = {p: ids[0] for (p, _), ids in self._tracks.items()}
            pid = pids.get(process, len(set(pids.values())) + 1)
            self._tracks[key] = (pid, len(self._tracks) + 1)
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

    def to_json(self) -> dict:
        meta = []
        for (process, thread), (pid, tid) in self._tracks.items():
            meta.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": process}})
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": thread}})
        return {"traceEvents": meta + self._events, "displayTimeUnit": "ms"}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))
