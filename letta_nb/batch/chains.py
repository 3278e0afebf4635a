"""The followers of a batch's items, and what each one tells the runner.

An item in flight or waiting for a person has one `run.Follower`. Its listener runs on the
reader's thread after every frame, so it stays cheap: it tells the runner only *that* the item
changed (a new status, its run named, a warning), once each, and stores a snapshot of a running
item's transcript at most every `RECORDS_EVERY` seconds, from which a kernel that died mid-run
resumes the item's run instead of reading it from its start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock
from ..core.status import ChainStatus
from ..core.transcript import Transcript

if TYPE_CHECKING:
    from ..core.cursor import CursorStore
    from ..run import Follower
    from .state import ItemState

#: A running item's transcript is stored at most this often (seconds), and not above this size.
RECORDS_EVERY = 2.0
RECORDS_MAX_CHARS = 200_000


class ItemChains:
    """One follower per item position, watched for the runner (`kick(pos)`: item changed)."""

    def __init__(
        self, key: str, store: CursorStore, clock: Clock, kick: Callable[[int], None]
    ) -> None:
        self.key = key
        self.store = store
        self.clock = clock
        self.kick = kick
        self._chains: dict[int, Follower] = {}
        self._listener_of: dict[int, Callable[[Any], None]] = {}
        self._seen: dict[int, str] = {}  # the status each listener last reported
        self._records_at: dict[int, float] = {}

    # ---- the mapping the runner reads --------------------------------------------------------
    def get(self, pos: int) -> Follower | None:
        return self._chains.get(pos)

    def __contains__(self, pos: object) -> bool:
        return pos in self._chains

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._chains))

    def items(self) -> list[tuple[int, Follower]]:
        return list(self._chains.items())

    def values(self) -> list[Follower]:
        return list(self._chains.values())

    # ---- watching ----------------------------------------------------------------------------
    def watch(self, item: ItemState, chain: Follower) -> None:
        """`chain` is the item's follower from now on (an older one is let go)."""
        self.unwatch(item.pos)
        pos = item.pos
        kick, seen, records_at = self.kick, self._seen, self._records_at
        monotonic = self.clock.monotonic
        told: list[Any] = [None, None]  # the warning and the run id the runner was told of

        def listener(f: Any) -> None:  # on the reader thread, after every frame: keep it cheap
            status = f.status
            rid = f.run_id
            warning = f.warning
            if warning is not told[0]:  # e.g. "reconnecting": the runner may ask the server
                told[0] = warning
                if warning:
                    kick(pos)
            if seen.get(pos) != status or (rid is not None and rid != told[1]):
                seen[pos] = status
                told[1] = rid  # once per run: the runner may take a while to look
                kick(pos)
                if status == ChainStatus.REQUIRES_APPROVAL:
                    self.store_records(item, f)
            elif (
                status == ChainStatus.RUNNING
                and monotonic() - records_at.get(pos, 0.0) >= RECORDS_EVERY
            ):
                self.store_records(item, f)

        self._listener_of[pos] = listener
        self._chains[pos] = chain
        seen[pos] = str(chain.status)
        records_at[pos] = monotonic()
        chain.add_listener(listener)

    def unwatch(self, pos: int) -> None:
        """Stop hearing from the item's follower (it keeps reading if it was)."""
        chain = self._chains.pop(pos, None)
        listener = self._listener_of.pop(pos, None)
        if chain is not None and listener is not None:
            chain.remove_listener(listener)

    def drop(self, pos: int) -> None:
        """The item is over: forget its follower."""
        self.unwatch(pos)
        self._seen.pop(pos, None)
        self._records_at.pop(pos, None)

    # ---- transcript snapshots ----------------------------------------------------------------
    def store_records(self, item: ItemState, chain: Follower) -> None:
        """A consistent transcript snapshot of a running item (called on its reader thread)."""
        self._records_at[item.pos] = self.clock.monotonic()
        tr = chain.transcript
        rid = tr.run_id
        if rid is not None and rid in tr.stop_reasons and chain.status == ChainStatus.RUNNING:
            # between the stop reason and the usage frame: a reader resumed from here would
            # never see the run's end (its end rule starts after the stop reason). Keep the
            # previous snapshot; the item is about to be over anyway.
            return
        if sum(len(e.text) for e in tr.entries) > RECORDS_MAX_CHARS:
            return  # a re-attach reads such a run from its start instead
        self.store.put_item_records(
            self.key,
            item.pos,
            {
                "attempt": item.attempt,
                "runs": list(tr.runs),
                "records": tr.to_records(),
                "seqs": tr.seq_state(),
            },
        )

    def stored_transcript(self, item: ItemState, *, this_attempt: bool) -> Transcript | None:
        """The item's stored snapshot, or None (none, unreadable; with `this_attempt`, one of
        another attempt or of runs the item does not know)."""
        stored = self.store.item_records(self.key, item.pos)
        if stored is None:
            return None
        if this_attempt and (
            stored.get("attempt") != item.attempt
            or not set(stored.get("runs") or []) <= set(item.runs)
        ):
            return None
        try:
            return Transcript.from_records(stored["records"], stored["seqs"])
        except (KeyError, TypeError, ValueError):
            return None
