//! Delivery accounting: for each message sent, how many recipients have
//! yet to receive it; the closed-loop window of each sender; latency.
//!
//! Sequence numbers of a sender are consecutive, so its messages in
//! flight live in a deque indexed by `seq - base_seq`; completed
//! messages are popped from the front. A message lost for good stays
//! until the end, where what it still expected is counted as lost.

use std::collections::VecDeque;

use crate::histogram::Histogram;
use crate::marker;

struct Entry {
    /// Recipients still expected.
    remaining: u32,
    /// Whether the message no longer holds a slot in the sender's
    /// window: completed, or given up on after the message timeout.
    released: bool,
    sent_ns: u64,
}

#[derive(Default)]
struct SenderLog {
    /// The sequence number of `entries[0]`.
    base_seq: u64,
    entries: VecDeque<Entry>,
    /// Messages holding a window slot.
    outstanding: u32,
    /// Sequence numbers below this were already checked for expiry.
    expire_from: u64,
}

impl SenderLog {
    fn next_seq(&self) -> u64 {
        self.base_seq + self.entries.len() as u64
    }
}

/// What a received message turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Delivery,
    /// `… joined` or `… left`.
    Announcement,
    /// Any other text, including markers this run did not send.
    Other,
}

/// Counts over the whole run unless named `measured`.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    /// Messages sent inside the measurement window.
    pub sent_measured: u64,
    /// Recipients expected, summed over messages sent.
    pub expected: u64,
    pub delivered: u64,
    /// Deliveries received inside the measurement window.
    pub delivered_measured: u64,
    /// Message bytes (server prefix included) of those deliveries.
    pub bytes_measured: u64,
    /// Deliveries beyond what a message expected (e.g. an echo to the
    /// sender) or of an unknown sender or sequence number.
    pub extra: u64,
    /// Messages that released their window slot by timing out.
    pub timed_out: u64,
    pub joins: u64,
    pub leaves: u64,
    pub other: u64,
}

pub struct Tracker {
    senders: Vec<SenderLog>,
    pub latency: Histogram,
    pub counts: Counts,
    /// The measurement window `[from, until)` in tool nanoseconds.
    from_ns: u64,
    until_ns: u64,
    /// Recipients still expected over all messages: the lost count once
    /// the run has drained.
    missing: u64,
    /// Messages with recipients still expected.
    incomplete: u64,
    /// Senders whose window gained room since the last `take_ready`.
    ready: Vec<u32>,
}

impl Tracker {
    pub fn new(senders: usize) -> Tracker {
        Tracker {
            senders: (0..senders).map(|_| SenderLog::default()).collect(),
            latency: Histogram::new(),
            counts: Counts::default(),
            from_ns: u64::MAX,
            until_ns: u64::MAX,
            missing: 0,
            incomplete: 0,
            ready: Vec::new(),
        }
    }

    pub fn start_window(&mut self, now_ns: u64) {
        self.from_ns = now_ns;
    }

    pub fn end_window(&mut self, now_ns: u64) {
        self.until_ns = now_ns;
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.from_ns && ns < self.until_ns
    }

    pub fn next_seq(&self, sender: u32) -> u64 {
        self.senders[sender as usize].next_seq()
    }

    pub fn outstanding(&self, sender: u32) -> u32 {
        self.senders[sender as usize].outstanding
    }

    pub fn missing(&self) -> u64 {
        self.missing
    }

    pub fn incomplete(&self) -> u64 {
        self.incomplete
    }

    /// Records that `sender` sent its next sequence number at `sent_ns`
    /// with `recipients` other clients connected.
    pub fn on_sent(&mut self, sender: u32, sent_ns: u64, recipients: u32) {
        let log = &mut self.senders[sender as usize];
        let done = recipients == 0;
        log.entries.push_back(Entry {
            remaining: recipients,
            released: done,
            sent_ns,
        });
        if done {
            pop_completed(log);
        } else {
            log.outstanding += 1;
            self.incomplete += 1;
        }
        self.missing += u64::from(recipients);
        self.counts.sent += 1;
        self.counts.expected += u64::from(recipients);
        if self.in_window(sent_ns) {
            self.counts.sent_measured += 1;
        }
    }

    /// Accounts for one received message.
    pub fn on_message(&mut self, text: &[u8], now_ns: u64) -> Seen {
        let Some(m) = marker::find(text) else {
            if text.ends_with(b" joined") {
                self.counts.joins += 1;
                return Seen::Announcement;
            }
            if text.ends_with(b" left") {
                self.counts.leaves += 1;
                return Seen::Announcement;
            }
            self.counts.other += 1;
            return Seen::Other;
        };
        let Some(log) = self.senders.get_mut(m.sender as usize) else {
            self.counts.other += 1;
            return Seen::Other;
        };
        let entry = m
            .seq
            .checked_sub(log.base_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| log.entries.get_mut(i))
            .filter(|e| e.remaining > 0 && e.sent_ns == m.sent_ns);
        let Some(entry) = entry else {
            self.counts.extra += 1;
            return Seen::Delivery;
        };
        entry.remaining -= 1;
        self.missing -= 1;
        if entry.remaining == 0 {
            self.incomplete -= 1;
            if !entry.released {
                entry.released = true;
                log.outstanding -= 1;
                self.ready.push(m.sender);
            }
            pop_completed(log);
        }
        self.counts.delivered += 1;
        if self.in_window(now_ns) {
            self.counts.delivered_measured += 1;
            self.counts.bytes_measured += text.len() as u64;
        }
        if self.in_window(m.sent_ns) {
            self.latency.record(now_ns.saturating_sub(m.sent_ns));
        }
        Seen::Delivery
    }

    /// Releases the window slot of every message older than `timeout_ns`
    /// that is still incomplete, so a lost message cannot stall its
    /// sender. Late deliveries still count.
    pub fn expire(&mut self, now_ns: u64, timeout_ns: u64) {
        for (index, log) in self.senders.iter_mut().enumerate() {
            let start = log.expire_from.max(log.base_seq);
            for seq in start..log.next_seq() {
                let entry = &mut log.entries[(seq - log.base_seq) as usize];
                if entry.sent_ns.saturating_add(timeout_ns) > now_ns {
                    break;
                }
                if !entry.released {
                    entry.released = true;
                    log.outstanding -= 1;
                    self.counts.timed_out += 1;
                    self.ready.push(index as u32);
                }
                log.expire_from = seq + 1;
            }
        }
    }

    /// Moves the senders whose window gained room into `out`.
    pub fn take_ready(&mut self, out: &mut Vec<u32>) {
        out.append(&mut self.ready);
    }
}

fn pop_completed(log: &mut SenderLog) {
    while log.entries.front().is_some_and(|e| e.remaining == 0) {
        log.entries.pop_front();
        log.base_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker::{write_with_filler, Marker};

    fn message(sender: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        write_with_filler(
            &mut payload,
            Marker {
                sender,
                seq,
                sent_ns,
            },
            64,
            &[b'x'; 64],
        );
        let mut text = b"User 50000: ".to_vec();
        text.extend_from_slice(&payload);
        text
    }

    #[test]
    fn deliveries_complete_messages_and_free_the_window() {
        let mut t = Tracker::new(2);
        t.start_window(0);
        t.on_sent(1, 100, 2);
        t.on_sent(1, 200, 2);
        assert_eq!((t.outstanding(1), t.next_seq(1), t.missing()), (2, 2, 4));
        assert_eq!(t.on_message(&message(1, 0, 100), 1_100), Seen::Delivery);
        assert_eq!(t.outstanding(1), 2);
        t.on_message(&message(1, 0, 100), 1_200);
        assert_eq!((t.outstanding(1), t.incomplete(), t.missing()), (1, 1, 2));
        let mut ready = vec![];
        t.take_ready(&mut ready);
        assert_eq!(ready, [1]);
        // A third copy of seq 0 is extra.
        t.on_message(&message(1, 0, 100), 1_300);
        assert_eq!(t.counts.extra, 1);
        assert_eq!(t.counts.delivered, 2);
        assert_eq!(t.latency.count(), 2);
        assert_eq!(t.latency.max(), Some(1_100));
    }

    #[test]
    fn out_of_order_completion_pops_only_from_the_front() {
        let mut t = Tracker::new(1);
        for ns in [10, 20, 30] {
            t.on_sent(0, ns, 1);
        }
        t.on_message(&message(0, 2, 30), 40);
        t.on_message(&message(0, 1, 20), 40);
        assert_eq!((t.outstanding(0), t.missing()), (1, 1));
        t.on_message(&message(0, 0, 10), 40);
        assert_eq!((t.outstanding(0), t.missing(), t.incomplete()), (0, 0, 0));
        assert!(t.senders[0].entries.is_empty());
        assert_eq!(t.next_seq(0), 3);
    }

    #[test]
    fn only_the_window_is_measured() {
        let mut t = Tracker::new(1);
        t.on_sent(0, 5, 1); // warm-up
        t.start_window(10);
        t.on_sent(0, 15, 1);
        t.on_message(&message(0, 0, 5), 20); // received in window, sent before
        t.end_window(30);
        t.on_message(&message(0, 1, 15), 35); // sent in window, received after
        assert_eq!(t.counts.sent, 2);
        assert_eq!(t.counts.sent_measured, 1);
        assert_eq!(t.counts.delivered, 2);
        assert_eq!(t.counts.delivered_measured, 1);
        assert_eq!(t.latency.count(), 1);
        assert_eq!(t.latency.max(), Some(20));
    }

    #[test]
    fn unknown_markers_and_announcements() {
        let mut t = Tracker::new(1);
        assert_eq!(t.on_message(b"User 1 joined", 0), Seen::Announcement);
        assert_eq!(t.on_message(b"User 1 left", 0), Seen::Announcement);
        assert_eq!(t.on_message(b"hello", 0), Seen::Other);
        assert_eq!(t.on_message(&message(5, 0, 1), 0), Seen::Other);
        assert_eq!(t.on_message(&message(0, 9, 1), 0), Seen::Delivery);
        assert_eq!(
            (
                t.counts.joins,
                t.counts.leaves,
                t.counts.other,
                t.counts.extra
            ),
            (1, 1, 2, 1)
        );
    }

    #[test]
    fn timeout_releases_the_slot_but_late_deliveries_count() {
        let mut t = Tracker::new(1);
        t.on_sent(0, 0, 1);
        t.on_sent(0, 500, 1);
        t.expire(999, 1_000);
        assert_eq!(t.outstanding(0), 2);
        t.expire(1_000, 1_000);
        assert_eq!((t.outstanding(0), t.counts.timed_out), (1, 1));
        t.expire(1_100, 1_000);
        assert_eq!(t.outstanding(0), 1);
        t.on_message(&message(0, 0, 0), 1_200);
        assert_eq!(
            (t.outstanding(0), t.missing(), t.counts.delivered),
            (1, 1, 1)
        );
        t.expire(2_000, 1_000);
        assert_eq!((t.outstanding(0), t.counts.timed_out), (0, 2));
    }

    #[test]
    fn a_message_to_nobody_completes_at_once() {
        let mut t = Tracker::new(1);
        t.on_sent(0, 0, 0);
        assert_eq!((t.outstanding(0), t.incomplete(), t.next_seq(0)), (0, 0, 1));
    }
}
