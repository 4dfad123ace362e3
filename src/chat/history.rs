//! A room's recent messages, bounded in count and in bytes.
//!
//! Entries arrive with increasing sequence numbers; the oldest leave when
//! either bound is passed. An entry larger than the byte bound on its own
//! is not kept (it was delivered live; it just cannot be replayed).
//! [`History::since`] answers a resuming client: what it missed, and
//! whether history still holds all of it.

use std::collections::VecDeque;
use std::rc::Rc;

use super::render::history_json_bound_scanned;
use crate::service::Outgoing;

/// One remembered message: what was said, by whom, when, and the handle
/// plain-text clients were sent live (replayed to them as it was, so
/// remembering encodes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// When it was said, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The sender's name when it was said (shared with the sender).
    pub from: Rc<str>,
    pub text: Box<str>,
    /// A `/me` action.
    pub me: bool,
    /// Said by a verified user (see `chat::auth`).
    pub verified: bool,
    /// What plain-text recipients were sent (shared, not copied).
    pub plain: Outgoing,
    /// The bytes it is charged for (see [`Entry::new`]).
    weight: usize,
}

impl Entry {
    /// An entry charged the larger of what it holds (text, name, the
    /// shared outgoing message) and what replaying it as JSON can take,
    /// so that the history's byte bound bounds both its memory and any
    /// replay (a text of control characters is six times longer in JSON).
    /// `json_extra` is what [`super::render::scan`] found in `text`.
    pub fn new(
        seq: u64,
        ts: u64,
        from: Rc<str>,
        text: &str,
        me: bool,
        plain: Outgoing,
        json_extra: usize,
    ) -> Entry {
        let held = text.len() + from.len() + plain.wire_len();
        let weight = held.max(history_json_bound_scanned(&from, text.len(), json_extra));
        Entry {
            seq,
            ts,
            from,
            text: text.into(),
            me,
            verified: false,
            plain,
            weight,
        }
    }

    /// The same entry, said by a verified user or not.
    pub fn by_verified(self, verified: bool) -> Entry {
        Entry { verified, ..self }
    }

    fn weight(&self) -> usize {
        self.weight
    }
}

/// The bounds of one room's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// What a resuming client gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Replay<'h> {
    /// The entries to replay, oldest first.
    pub entries: Vec<&'h Entry>,
    /// Set when history no longer holds everything after `since`: the
    /// first sequence number that was missed and the first still held.
    pub gap: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl History {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (text, names and the shared outgoing messages).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Remembers `entry`, dropping the oldest past the bounds.
    pub fn push(&mut self, entry: Entry, bounds: Bounds) {
        let weight = entry.weight();
        if bounds.max_entries == 0 || weight > bounds.max_bytes {
            return;
        }
        while self.entries.len() >= bounds.max_entries || self.bytes + weight > bounds.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.weight();
        }
        self.bytes += weight;
        self.entries.push_back(entry);
    }

    /// Whether message `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        let at = self.entries.partition_point(|e| e.seq < seq);
        self.entries.get(at).is_some_and(|e| e.seq == seq)
    }

    /// The sequence numbers held, oldest first.
    pub fn seqs(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.seq).collect()
    }

    /// Takes in `entries` (from another source, e.g. the cluster's shared
    /// history) beside those held: in order, each number once (the held
    /// entry wins), the oldest dropped past the bounds.
    pub fn merge(&mut self, entries: Vec<Entry>, bounds: Bounds) {
        let mut all: Vec<Entry> = std::mem::take(&mut self.entries).into();
        all.extend(entries);
        // Stable: a held entry comes before a new one with its number.
        all.sort_by_key(|e| e.seq);
        all.dedup_by_key(|e| e.seq);
        self.bytes = 0;
        for entry in all {
            self.push(entry, bounds);
        }
    }

    /// Everything held, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entries after `since`, and the gap if some were dropped.
    /// `last_seq` is the room's latest sequence number.
    pub fn since(&self, since: u64, last_seq: u64) -> Replay<'_> {
        let start = self.entries.partition_point(|e| e.seq <= since);
        let entries: Vec<&Entry> = self.entries.range(start..).collect();
        let first_held = entries.first().map_or(last_seq + 1, |e| e.seq);
        let gap = (since < last_seq && first_held > since + 1).then_some((since + 1, first_held));
        Replay { entries, gap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::outbox::SharedFrame;

    /// An entry of weight 200 + 4 + `text.len()` + 2 (its JSON bound,
    /// for text without characters to escape).
    fn entry(seq: u64, text: &str) -> Entry {
        let plain = Outgoing::from_plain(SharedFrame::concat(b"al: ", &[text.as_bytes()]));
        let extra = super::super::render::scan(text).json_extra;
        Entry::new(seq, 0, Rc::from("al"), text, false, plain, extra)
    }

    const ROOMY: Bounds = Bounds {
        max_entries: 3,
        max_bytes: 1000,
    };

    fn seqs(h: &History) -> Vec<u64> {
        h.all().map(|e| e.seq).collect()
    }

    #[test]
    fn merging_keeps_order_and_each_number_once() {
        let mut h = History::default();
        for seq in [5, 6] {
            h.push(entry(seq, "x"), ROOMY);
        }
        h.merge(vec![entry(2, "a"), entry(6, "dup"), entry(4, "b")], ROOMY);
        assert_eq!(seqs(&h), vec![4, 5, 6]);
        assert_eq!(&*h.all().last().unwrap().text, "x");
        assert!(h.contains(4) && h.contains(6) && !h.contains(2) && !h.contains(7));
        assert_eq!(h.seqs(), vec![4, 5, 6]);
    }

    #[test]
    fn keeps_the_last_n() {
        let mut h = History::default();
        for seq in 1..=5 {
            h.push(entry(seq, "x"), ROOMY);
        }
        assert_eq!(seqs(&h), [3, 4, 5]);
        assert_eq!(h.bytes(), 3 * (200 + 4 + 1 + 2));
        assert!(h.all().all(|e| &*e.text == "x"));
    }

    #[test]
    fn byte_bound_evicts_oldest_and_skips_giants() {
        let bounds = Bounds {
            max_entries: 100,
            max_bytes: 430,
        };
        let mut h = History::default();
        h.push(entry(1, "aaaa"), bounds); // weight 210
        h.push(entry(2, "bbbb"), bounds); // 420
        h.push(entry(3, "cc"), bounds); // would be 628: drops 1
        assert_eq!(seqs(&h), [2, 3]);
        h.push(entry(4, &"z".repeat(300)), bounds);
        assert_eq!(seqs(&h), [2, 3], "too big to keep at all");
        assert_eq!(h.bytes(), 418);
    }

    #[test]
    fn control_characters_are_charged_their_json_escapes() {
        let controls = "\u{1}".repeat(100);
        let plain = Outgoing::from_plain(SharedFrame::concat(b"al: ", &[controls.as_bytes()]));
        let extra = super::super::render::scan(&controls).json_extra;
        let e = Entry::new(1, 0, Rc::from("al"), &controls, false, plain, extra);
        assert_eq!(e.weight(), 200 + 4 + 2 + 600);
    }

    #[test]
    fn zero_entries_turns_it_off() {
        let mut h = History::default();
        h.push(
            entry(1, "x"),
            Bounds {
                max_entries: 0,
                max_bytes: 100,
            },
        );
        assert!(h.is_empty());
    }

    #[test]
    fn since_replays_exactly_what_was_missed() {
        let mut h = History::default();
        for seq in 1..=3 {
            h.push(entry(seq, "x"), ROOMY);
        }
        let r = h.since(1, 3);
        assert_eq!(r.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.gap, None);
        let r = h.since(3, 3);
        assert!(r.entries.is_empty());
        assert_eq!(r.gap, None);
    }

    #[test]
    fn since_reports_the_gap() {
        let mut h = History::default();
        for seq in 1..=6 {
            h.push(entry(seq, "x"), ROOMY);
        }
        let r = h.since(1, 6);
        assert_eq!(
            r.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(r.gap, Some((2, 4)), "2 and 3 are gone");
        // Nothing held at all but messages were said.
        let empty = History::default();
        assert_eq!(empty.since(2, 9).gap, Some((3, 10)));
        // A client ahead of the room (the server restarted) gets no gap here.
        assert_eq!(h.since(100, 6).gap, None);
    }
}
