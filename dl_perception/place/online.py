"""Online mode: keyframes join the database as the robot moves, and a query that matches an older
keyframe well is a revisit (a loop-closure candidate).

Keyframes taken in the last `ignore_recent` seconds are held back from search: the robot always
looks like where it just was, and those matches say nothing about loops. A keyframe is taken
when the robot has moved `keyframe_distance` metres since the last one (with poses) or
`keyframe_period` seconds have passed (always, so a robot without poses still builds a map).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from .database import PlaceDatabase

NAN3, NAN4 = np.full(3, np.nan), np.full(4, np.nan)


@dataclass
class Revisit:
    stamp: float  # of the query frame
    db_index: int
    score: float
    db_stamp: float


class OnlinePlaces:
    def __init__(self, database: PlaceDatabase, ignore_recent: float = 30.0,
                 keyframe_distance: float = 2.0, keyframe_period: float = 1.0,
                 revisit_min_score: float = 0.5):
        self.database = database
        self.ignore_recent = ignore_recent
        self.keyframe_distance = keyframe_distance
        self.keyframe_period = keyframe_period
        self.revisit_min_score = revisit_min_score
        self._held_back: collections.deque = collections.deque()
        self._last_keyframe: tuple[float, np.ndarray] | None = None
        self.keyframes = 0
        self.revisits = 0

    def _release(self, now: float) -> None:
        while self._held_back and self._held_back[0][2] <= now - self.ignore_recent:
            descriptor, position, stamp, quaternion = self._held_back.popleft()
            self.database.add(descriptor[None], position[None], quaternion[None], [stamp],
                              [f"keyframe@{stamp:.3f}"])

    def _is_keyframe(self, stamp: float, position: np.ndarray) -> bool:
        if self._last_keyframe is None:
            return True
        last_stamp, last_position = self._last_keyframe
        if stamp - last_stamp >= self.keyframe_period > 0:
            return True
        return (self.keyframe_distance > 0 and np.isfinite(position).all()
                and np.isfinite(last_position).all()
                and np.linalg.norm(position - last_position) >= self.keyframe_distance)

    def observe(self, descriptor: np.ndarray, stamp: float, k: int, position=NAN3,
                quaternion=NAN4) -> tuple[np.ndarray, np.ndarray, Revisit | None, bool]:
        """Search the database (held-back keyframes excluded), then maybe take this frame as a
        keyframe. Returns (scores, indices) of the top k, the revisit if the best match is one,
        and whether the frame became a keyframe."""
        position = np.asarray(position, dtype=np.float64)
        quaternion = np.asarray(quaternion, dtype=np.float64)
        self._release(stamp)
        scores, indices = self.database.search(descriptor, k)
        scores, indices = scores[0], indices[0]
        revisit = None
        if len(indices) and indices[0] >= 0 and scores[0] >= self.revisit_min_score:
            revisit = Revisit(stamp, int(indices[0]), float(scores[0]),
                              float(self.database.stamps[indices[0]]))
            self.revisits += 1
        added = self._is_keyframe(stamp, position)
        if added:
            self._held_back.append((np.asarray(descriptor, np.float32).reshape(-1), position,
                                    stamp, quaternion))
            self._last_keyframe = (stamp, position)
            self.keyframes += 1
        return scores, indices, revisit, added
