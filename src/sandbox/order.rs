//! Creation-order index with O(log n) "k-th live entry" lookup.
//!
//! Listing pages by `startIndex` must follow creation order even after deletions.
//! Slots keep ids in insertion order (deleted ones become holes) and a Fenwick tree
//! counts live slots, so finding where page N starts does not walk the earlier pages.

/// Insertion-ordered ids with deletions and positional lookup.
#[derive(Debug)]
pub(crate) struct OrderIndex {
    slots: Vec<Option<String>>,
    /// 1-based Fenwick tree over "slot is live" flags; `tree[0]` is unused.
    tree: Vec<u32>,
    live: usize,
}

impl Default for OrderIndex {
    fn default() -> Self {
        OrderIndex {
            slots: Vec::new(),
            tree: vec![0],
            live: 0,
        }
    }
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl OrderIndex {
    /// Number of live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Append `id`, returning its slot.
    pub(crate) fn push(&mut self, id: String) -> usize {
        let slot = self.slots.len();
        self.slots.push(Some(id));
        let i = slot + 1;
        let node = 1 + self.prefix(i - 1) - self.prefix(i - lowbit(i));
        self.tree.push(node);
        self.live += 1;
        slot
    }

    /// Live entries in slots `0..i`.
    fn prefix(&self, mut i: usize) -> u32 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= lowbit(i);
        }
        sum
    }

    /// Free `slot`.
    pub(crate) fn remove(&mut self, slot: usize) {
        if self.slots.get_mut(slot).and_then(Option::take).is_some() {
            let mut i = slot + 1;
            while i < self.tree.len() {
                self.tree[i] -= 1;
                i += lowbit(i);
            }
            self.live -= 1;
        }
    }

    /// Slot of the `k`-th (0-based) live entry.
    fn nth_slot(&self, k: usize) -> Option<usize> {
        if k >= self.live {
            return None;
        }
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut rem = u32::try_from(k + 1).ok()?;
        let mut step = if n == 0 { 0 } else { 1 << n.ilog2() };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] < rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        Some(pos)
    }

    /// Up to `count` live ids starting at the `offset`-th live entry.
    pub(crate) fn page(&self, offset: usize, count: usize) -> impl Iterator<Item = &str> {
        let start = self.nth_slot(offset).unwrap_or(self.slots.len());
        self.slots[start..]
            .iter()
            .filter_map(|s| s.as_deref())
            .take(count)
    }

    /// Whether holes outnumber live entries enough to be worth compacting.
    pub(crate) fn needs_compaction(&self) -> bool {
        let holes = self.slots.len() - self.live;
        holes > 1024 && holes > self.live
    }

    /// Drop the holes; returns every live id with its new slot.
    pub(crate) fn compact(&mut self) -> Vec<(String, usize)> {
        let ids: Vec<String> = self.slots.drain(..).flatten().collect();
        *self = OrderIndex::default();
        ids.into_iter()
            .map(|id| {
                let slot = self.push(id.clone());
                (id, slot)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_skips_holes() {
        let mut o = OrderIndex::default();
        let slots: Vec<usize> = (0..20).map(|i| o.push(format!("u{i}"))).collect();
        for s in slots.iter().step_by(3) {
            o.remove(*s);
        }
        let expected: Vec<String> = (0..20)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("u{i}"))
            .collect();
        assert_eq!(o.len(), expected.len());
        for offset in 0..=expected.len() {
            let got: Vec<&str> = o.page(offset, 4).collect();
            let want: Vec<&str> = expected
                .iter()
                .skip(offset)
                .take(4)
                .map(String::as_str)
                .collect();
            assert_eq!(got, want, "offset {offset}");
        }
        o.remove(slots[1]);
        o.remove(slots[1]);
        assert_eq!(o.len(), expected.len() - 1);
        let moved = o.compact();
        assert_eq!(moved.len(), expected.len() - 1);
        assert_eq!(o.page(0, 2).collect::<Vec<_>>(), vec!["u2", "u4"]);
    }
}
