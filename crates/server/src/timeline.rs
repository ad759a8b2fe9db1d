//! [`Timeline`]: the events of a bounded table in the order they happened, so that the policy
//! types can find their oldest entry without scanning the table.
//!
//! The tables ([`ReplyCache`](crate::ReplyCache), [`RateLimiter`](crate::RateLimiter),
//! [`AmplificationBudget`](crate::AmplificationBudget)) append an item each time an entry is
//! written, and never remove items from the middle. An item whose entry was written again,
//! removed or replaced since is *stale*: the table recognises it by comparing the item with the
//! entry (a time or a serial number) and the timeline drops it. Stale items in front are dropped
//! as they surface; when stale items make up more than an eighth of the live ones plus a few,
//! one pass drops them all. That pass costs O(length) and leaves only live items, and the next
//! one needs an eighth as many new stale items: every item is dropped once, so appending costs
//! amortised O(1), and the timeline never holds more than `live + live / 8 + 65` items.

use std::collections::VecDeque;

/// Stale items tolerated on top of an eighth of the live ones, so that a table with few
/// entries is not compacted on every append.
const SLACK: usize = 64;

/// The items of a table's events, oldest first, with at most one live item per entry.
#[derive(Debug)]
pub(crate) struct Timeline<T> {
    items: VecDeque<T>,
    /// The most items the timeline can hold when the table is full: its capacity never grows
    /// past this, so the table's bound on memory holds in bytes, not only in entries.
    max_len: usize,
}

impl<T: Copy> Timeline<T> {
    /// A timeline for a table that holds at most `max_live` entries.
    pub(crate) fn new(max_live: usize) -> Timeline<T> {
        Timeline {
            items: VecDeque::new(),
            max_len: max_live
                .saturating_add(max_live / 8)
                .saturating_add(SLACK + 1),
        }
    }

    /// Appends `item`, which the table has just made live. `live` is the number of live items
    /// after this one (one per entry of the table) and `is_live` tells them from stale ones.
    pub(crate) fn push(&mut self, item: T, live: usize, is_live: impl FnMut(&T) -> bool) {
        if self.items.len() == self.items.capacity() {
            // Double, as VecDeque would, but stop at `max_len`.
            let room = self.max_len.saturating_sub(self.items.len()).max(1);
            self.items.reserve_exact(self.items.len().max(4).min(room));
        }
        self.items.push_back(item);
        let stale = self.items.len().saturating_sub(live);
        if stale > live / 8 + SLACK {
            self.items.retain(is_live);
        }
    }

    /// The oldest live item, after dropping the stale items in front of it.
    pub(crate) fn oldest(&mut self, mut is_live: impl FnMut(&T) -> bool) -> Option<T> {
        while let Some(item) = self.items.front() {
            if is_live(item) {
                return Some(*item);
            }
            self.items.pop_front();
        }
        None
    }

    /// Drops the oldest item: the table calls this after removing the entry
    /// [`oldest`](Timeline::oldest) returned.
    pub(crate) fn pop(&mut self) {
        self.items.pop_front();
    }

    /// The number of items held, live and stale.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The number of items the timeline can hold without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.items.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_items_are_dropped_and_capacity_stops_at_the_bound() {
        // A table of at most 100 keys, each rewritten many times: only the latest write of
        // each key is live.
        let mut latest = [0_u64; 100];
        let mut timeline = Timeline::new(latest.len());
        let mut serial = 0;
        for round in 0..50 {
            for key in 0..latest.len() {
                serial += 1;
                latest[key] = serial;
                let live = latest.iter().filter(|&&s| s != 0).count();
                let snapshot = latest;
                timeline.push((key, serial), live, |&(k, s)| snapshot[k] == s);
                assert!(timeline.len() <= 100 + 100 / 8 + SLACK + 1, "round {round}");
            }
        }
        assert!(timeline.capacity() <= 100 + 100 / 8 + SLACK + 1);
        let oldest = timeline.oldest(|&(k, s)| latest[k] == s);
        assert_eq!(oldest, Some((0, latest[0])));
    }
}
