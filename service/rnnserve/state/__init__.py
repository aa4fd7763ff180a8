"""Where session states live between steps, behind one small interface.

Two backends: `memory` (default; one process; a compact slab of float32 rows) and `redis`
(replicas share sessions; states as raw float32 bytes with their shape; every write is a
checked read-modify-write so two replicas never lose each other's steps).

A session's state tensors are stored without their batch axis ([layers, hidden] each); the
batcher gathers many sessions into [layers, batch, hidden], runs them, and scatters back."""

from rnnserve.state.base import (
    AttachEvent,
    Gathered,
    SessionEvent,
    SessionRecord,
    StateLayout,
    StateStore,
    Written,
)

__all__ = ["AttachEvent", "Gathered", "SessionEvent", "SessionRecord", "StateLayout",
           "StateStore", "Written"]
