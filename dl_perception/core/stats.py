"""Per-node frame accounting: rates, latencies and drops by reason. Shared by the ROS nodes
(/diagnostics), offline bag processing and the benchmark, so all report the same numbers."""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class FrameStats:
    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self._processing_s = collections.deque(maxlen=window)
        self._latency_s = collections.deque(maxlen=window)
        self._done_at = collections.deque(maxlen=window)
        self._last_sequence: dict[bytes, int] = {}

    def frame_received(self, publisher: bytes | None = None, sequence: int | None = None) -> None:
        """Count a frame; a gap in a publisher's sequence numbers counts as frames skipped (lost in
        transport or overwritten in a keep-last queue while this node was busy)."""
        with self._lock:
            self.received += 1
            if publisher is None or sequence is None:
                return
            last = self._last_sequence.get(publisher)
            if last is not None and sequence > last + 1:
                self.drops["skipped"] += sequence - last - 1
            self._last_sequence[publisher] = sequence

    def drop(self, reason: str) -> None:
        with self._lock:
            self.drops[reason] += 1

    def frame_done(self, processing_s: float, latency_s: float | None = None) -> None:
        with self._lock:
            self.processed += 1
            self._processing_s.append(processing_s)
            if latency_s is not None:
                self._latency_s.append(latency_s)
            self._done_at.append(time.monotonic())

    def rate_hz(self) -> float:
        with self._lock:
            if len(self._done_at) < 2:
                return 0.0
            span = self._done_at[-1] - self._done_at[0]
            recent = time.monotonic() - self._done_at[-1]
            return (len(self._done_at) - 1) / span if span > 0 and recent < 2 * span else 0.0

    @staticmethod
    def _percentiles(values) -> dict[str, float]:
        if not values:
            return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan")}
        array = np.asarray(values) * 1e3
        return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
                "p99": float(np.percentile(array, 99))}

    def summary(self) -> dict:
        rate = self.rate_hz()
        with self._lock:
            return {
                "frames_received": self.received,
                "frames_processed": self.processed,
                "rate_hz": rate,
                "processing_ms": self._percentiles(list(self._processing_s)),
                "latency_ms": self._percentiles(list(self._latency_s)),
                "drops_total": sum(self.drops.values()),
                "drops": dict(self.drops),
            }
