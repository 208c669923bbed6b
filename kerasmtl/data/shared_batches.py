"""Batches that cross from worker processes to the training process without a copy.

With ``use_multiprocessing=True`` Keras pickles every batch back through a pipe, which
costs about as much CPU as decoding and augmenting it. A `BatchArena` is one block of
shared memory in slots of one batch each, mapped before the pool forks and so by every
worker: a worker fills an array in a free slot (`BatchArena.claim`), only ``(arena,
offset, shape, dtype)`` is pickled, and the training process gets a view of the slot,
freed when that array and every view of it (e.g. a tensor borrowing its memory) are gone.

Nothing blocks: with every slot in use, a batch too big, or the ``spawn`` /
``forkserver`` start methods (the arena cannot be inherited), batches are ordinary
arrays, pickled as usual.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import uuid
import weakref

import numpy as np

_FREE, _CLAIMED = 0, 1

# The arenas of this process by token: unpickled batches find their memory here.
_ARENAS: weakref.WeakValueDictionary[str, BatchArena] = weakref.WeakValueDictionary()


class BatchArena:
    """A block of shared memory in ``slots`` slots (batches in flight or held at once) of
    ``slot_bytes`` bytes (the largest batch); create it before the worker pool starts."""

    def __init__(self, slots: int, slot_bytes: int):
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"A BatchArena needs slots >= 1 and slot_bytes >= 1. Received: {slots=}, {slot_bytes=}")
        self.slots = int(slots)
        # slots start on 64-byte boundaries: what numpy and TensorFlow want for aligned loads
        self.slot_bytes = -(-int(slot_bytes) // 64) * 64
        self.token = uuid.uuid4().hex
        self.owner_pid = os.getpid()
        # MAP_SHARED | MAP_ANONYMOUS: shared with forked children, reserved lazily, and
        # not limited by the size of /dev/shm (64 MB in a default Docker container)
        self._memory = mmap.mmap(-1, self.slots * self.slot_bytes + self.slots)
        self._state = np.frombuffer(self._memory, np.uint8, count=self.slots, offset=self.slots * self.slot_bytes)
        self._lock = multiprocessing.Lock()
        self._address = np.frombuffer(self._memory, np.uint8, count=1).ctypes.data
        _ARENAS[self.token] = self

    @property
    def in_worker(self) -> bool:
        """Whether this is a process forked from the one that made the arena."""
        return os.getpid() != self.owner_pid

    def claim(self, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray | None:
        """An uninitialised `ArenaArray` in a free slot, or None (no free slot, or too big)."""
        count = int(np.prod(shape))
        if count * np.dtype(dtype).itemsize > self.slot_bytes:
            return None
        with self._lock:
            free = np.flatnonzero(self._state == _FREE)
            if len(free) == 0:
                return None
            slot = int(free[0])
            self._state[slot] = _CLAIMED
        start = slot * self.slot_bytes
        array = np.frombuffer(self._memory, np.dtype(dtype), count=count, offset=start)
        return array.reshape(shape).view(ArenaArray)

    def release(self, array_or_slot) -> None:
        """Marks a slot free (an `ArenaArray` that will not be sent, or a slot index)."""
        slot = array_or_slot if isinstance(array_or_slot, int) else self._offset(array_or_slot) // self.slot_bytes
        self._state[slot] = _FREE

    def free_slots(self) -> int:
        """How many slots are free now."""
        return int(np.count_nonzero(self._state == _FREE))

    def owns(self, array: np.ndarray) -> bool:
        """Whether ``array``'s memory lies in this arena."""
        return 0 <= self._offset(array) < self.slots * self.slot_bytes

    def _offset(self, array: np.ndarray) -> int:
        return array.ctypes.data - self._address

    def reference(self, array: np.ndarray) -> tuple:
        """What travels instead of ``array``'s bytes: ``(token, offset, shape, dtype)``."""
        if not array.flags.c_contiguous:
            raise ValueError("Only C-contiguous arrays can travel by reference to a BatchArena slot.")
        return self.token, self._offset(array), tuple(array.shape), array.dtype.str

    def receive(self, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """The training process's view of a slot; the slot is freed with the view."""
        count = int(np.prod(shape))
        owner = np.frombuffer(self._memory, np.dtype(dtype), count=count, offset=offset)
        # numpy views of `owner` keep `owner` as their base, so the slot stays claimed
        # as long as any of them (or a tensor borrowing the memory) is alive
        weakref.finalize(owner, self.release, offset // self.slot_bytes)
        return owner.reshape(shape)

    def __reduce__(self):
        # an anonymous mapping cannot travel to a spawned process: it gets no arena
        return _no_arena, ()


def _no_arena():
    return None


class ArenaArray(np.ndarray):
    """A worker's array in a `BatchArena` slot: pickles as a reference to the slot."""

    def __reduce_ex__(self, protocol):
        for arena in _ARENAS.values():
            if arena.owns(self) and self.flags.c_contiguous:
                return _receive, arena.reference(self)
        return np.asarray(self).__reduce_ex__(protocol)


def _receive(token: str, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    arena = _ARENAS.get(token)
    if arena is None:
        raise RuntimeError(f"A batch refers to shared memory {token} that this process does not hold.")
    return arena.receive(offset, shape, dtype)
