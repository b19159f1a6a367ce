//! The manager's timers: one heap, each entry naming what it is for. A timer
//! whose subject has moved on (a newer generation, a removed subscription) does
//! nothing when it fires.

use super::subscriber::UpTimer;
use super::types::{Package, PhoneId, TargetId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A phone subscription runs out (for this refresh generation).
    PhoneExpire {
        phone: PhoneId,
        generation: u32,
    },
    /// The held first NOTIFY may wait no longer for the upstream.
    PhoneHold {
        phone: PhoneId,
    },
    Up(TargetId, Package, UpTimer),
    /// The upstream pacer has a token for the next queued SUBSCRIBE.
    Pace,
    /// No phone watches the target any more (since this linger generation).
    Linger {
        target: TargetId,
        generation: u32,
    },
}

/// Timers in firing order (equal times in the order they were set).
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: u64,
    /// Size from which the heap is compacted (twice what the last compaction
    /// kept, at least [`COMPACT_MIN`]).
    compact_at: usize,
}

/// No compaction below this many entries.
const COMPACT_MIN: usize = 1024;

impl Timers {
    pub(super) fn schedule(&mut self, at: Instant, t: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, t)));
    }

    /// Whether stale entries may dominate: every refresh leaves one behind
    /// until it fires, an hour later.
    pub(super) fn needs_compaction(&self) -> bool {
        self.heap.len() >= self.compact_at.max(COMPACT_MIN)
    }

    /// Keep only the timers `live` says still matter (amortised: the next
    /// compaction waits until the heap has doubled again).
    pub(super) fn compact(&mut self, live: impl Fn(&Timer) -> bool) {
        let heap = std::mem::take(&mut self.heap);
        self.heap = heap
            .into_vec()
            .into_iter()
            .filter(|Reverse((_, _, t))| live(t))
            .collect();
        self.compact_at = self.heap.len() * 2;
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// When the next timer fires.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next timer due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, t))| t)
    }
}
