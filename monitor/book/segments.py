"""Many growable int32 lists in one flat array (the collateral holders per asset).

Group ``g`` occupies ``flat[start[g] : start[g] + cap[g]]`` and holds
``length[g]`` items. Keeping every list in one array lets a compiled kernel
reach any of them (a batch of ticks may move several assets). A list that outgrows its segment moves
to the end with twice the room; when the flat array is full everything is
repacked, so the waste stays bounded and growth is amortised.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

_MIN_CAP = 16


class SegmentedLists:
    def __init__(self, groups: int) -> None:
        self.start: I64 = np.arange(groups, dtype=np.int64) * _MIN_CAP
        self.cap: I64 = np.full(groups, _MIN_CAP, dtype=np.int64)
        self.length: I64 = np.zeros(groups, dtype=np.int64)
        self.flat: I32 = np.zeros(groups * _MIN_CAP * 2, dtype=np.int32)
        self.used = groups * _MIN_CAP

    def view(self, g: int) -> I32:
        s = int(self.start[g])
        return self.flat[s : s + int(self.length[g])]

    def ensure_room(self, g: int, extra: int) -> None:
        """Make room for ``extra`` more items in group ``g``."""
        need = int(self.length[g]) + extra
        if need <= self.cap[g]:
            return
        new_cap = max(_MIN_CAP, 2 * need)
        if self.used + new_cap > self.flat.shape[0]:
            self._repack(g, new_cap)
            return
        n = int(self.length[g])
        s = int(self.start[g])
        self.flat[self.used : self.used + n] = self.flat[s : s + n]
        self.start[g] = self.used
        self.cap[g] = new_cap
        self.used += new_cap

    def _repack(self, grow: int = -1, grow_cap: int = 0) -> None:
        caps = np.maximum(self.cap, _MIN_CAP)
        if grow >= 0:
            caps[grow] = grow_cap
        starts = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        total = int(caps.sum())
        flat = np.zeros(2 * total, dtype=np.int32)
        for g in range(caps.shape[0]):
            n = int(self.length[g])
            s = int(self.start[g])
            flat[starts[g] : starts[g] + n] = self.flat[s : s + n]
        self.flat, self.start, self.cap, self.used = flat, starts, caps, total

    def assign(self, contents: list[I32]) -> None:
        """Replace every list at once (bulk load); each gets room to grow."""
        lengths = np.array([c.shape[0] for c in contents], dtype=np.int64)
        caps = np.maximum(_MIN_CAP, 2 * lengths)
        starts = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        total = int(caps.sum())
        flat = np.zeros(total + total // 2, dtype=np.int32)
        for g, c in enumerate(contents):
            flat[starts[g] : starts[g] + c.shape[0]] = c
        self.flat, self.start, self.cap, self.length, self.used = flat, starts, caps, lengths, total
