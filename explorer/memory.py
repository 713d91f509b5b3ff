"""A memory budget for what the page keeps loaded: training features and their kernels, across every
model and projection the visitors used. Each cache is a ``Held`` mapping; all of them share one
least-recently-used budget (``EXPLORER_MEMORY_GB``, default 8: a free 16 GB Space keeps room for the
OS, the interpreter, the models and a build worker). Past the budget the entries used longest ago are
dropped — the next use reloads them from disk (a stored feature set loads in about a second)."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import MutableMapping

import numpy as np


def nbytes(value) -> int:
    """The bytes an entry holds: its arrays, found through its attributes (one level, plus tuples)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return sum(v.nbytes for v in vars(value).values() if isinstance(v, np.ndarray)) if hasattr(value, "__dict__") else 0


class Budget:
    def __init__(self, limit_bytes: int):
        self.limit, self.used = limit_bytes, 0
        self._order: OrderedDict[tuple[int, object], tuple[Held, int]] = OrderedDict()
        self._lock = threading.RLock()

    def touch(self, owner: Held, key) -> None:
        with self._lock:
            if (id(owner), key) in self._order:
                self._order.move_to_end((id(owner), key))

    def add(self, owner: Held, key, size: int) -> None:
        with self._lock:
            self.forget(owner, key)
            self._order[(id(owner), key)] = (owner, size)
            self.used += size
            while self.used > self.limit and len(self._order) > 1:
                (_, old_key), (old_owner, _) = next(iter(self._order.items()))
                old_owner.evict(old_key)

    def forget(self, owner: Held, key) -> None:
        with self._lock:
            entry = self._order.pop((id(owner), key), None)
            if entry:
                self.used -= entry[1]


BUDGET = Budget(int(float(os.environ.get("EXPLORER_MEMORY_GB", "8")) * 2 ** 30))


class Held(MutableMapping):
    """A dict whose entries count against ``budget`` and may be evicted when it overflows (the entry just
    added is never the one evicted)."""

    def __init__(self, budget: Budget | None = None):
        self._data, self.budget = {}, budget or BUDGET

    def __getitem__(self, key):
        value = self._data[key]
        self.budget.touch(self, key)
        return value

    def __setitem__(self, key, value):
        self._data[key] = value
        self.budget.add(self, key, nbytes(value))

    def __delitem__(self, key):
        del self._data[key]
        self.budget.forget(self, key)

    def evict(self, key) -> None:
        self._data.pop(key, None)
        self.budget.forget(self, key)

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)
