//! A connection's queue of outgoing bytes.
//!
//! A broadcast is encoded once into a [`SharedFrame`] (a reference-counted
//! byte slice) and every recipient's outbox holds a handle to the same
//! bytes, never a copy. [`Outbox::write_to`] hands as many queued frames as
//! fit to one vectored write (the kernel's `writev`), so a socket gets one
//! system call per loop pass however many messages were queued for it:
//! batching is where the time goes on loopback, not copying.
//!
//! The outbox counts its bytes; what to do when a peer lets them pile up
//! is the connection's decision, not this queue's.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Bytes ready to be written to any number of sockets. Cloning is a
/// reference-count increment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFrame(Rc<[u8]>);

impl SharedFrame {
    /// Builds a buffer of exactly `head` followed by the concatenation of
    /// `parts`, in one allocation.
    pub fn concat(head: &[u8], parts: &[&[u8]]) -> SharedFrame {
        let len = head.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut bytes = Rc::<[u8]>::new_uninit_slice(len);
        let buf = Rc::get_mut(&mut bytes).expect("a fresh Rc is unique");
        let mut at = 0;
        for part in std::iter::once(&head).chain(parts) {
            buf[at..at + part.len()].write_copy_of_slice(part);
            at += part.len();
        }
        assert_eq!(at, len, "every byte written");
        // SAFETY: the loop wrote all `len` bytes (asserted just above), so
        // the whole slice is initialised.
        SharedFrame(unsafe { bytes.assume_init() })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SharedFrame {
    fn from(bytes: Vec<u8>) -> SharedFrame {
        SharedFrame(bytes.into())
    }
}

/// How many frames go to one `writev` at most (Linux's `IOV_MAX` is
/// 1024). A saturated broadcast queues a few hundred small frames per
/// peer per pass; each system call saved is worth far more than the 8 KiB
/// of stack this takes.
const MAX_IOVECS: usize = 512;
/// The slice array used when only a few frames wait.
const FEW_IOVECS: usize = 16;

/// Queue slots kept after draining; a larger buffer (a backlog) is freed.
const KEEP_SLOTS: usize = 1024;

/// What a write attempt achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was written.
    Done,
    /// The socket would block with bytes still queued.
    Blocked,
}

/// The frames waiting for one socket, oldest first.
///
/// One word while nothing is queued: the queue lives out of line and
/// exists only while a peer has had frames since the loop last went
/// quiet ([`Outbox::release_if_empty`]). Idle connections are most of
/// them, and each would otherwise carry the 48 bytes of an empty queue.
#[derive(Debug, Default)]
pub struct Outbox(Option<Box<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<SharedFrame>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl Outbox {
    pub fn push(&mut self, frame: SharedFrame) {
        let queue = self.0.get_or_insert_with(Box::default);
        queue.queued += frame.len();
        queue.frames.push_back(frame);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.queued)
    }

    pub fn is_empty(&self) -> bool {
        self.frames() == 0
    }

    /// Frames waiting (a partly written one included).
    pub fn frames(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.frames.len())
    }

    /// Drops everything queued (the peer is gone).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// Writes as much as `sink` takes, in vectored writes of up to
    /// `MAX_IOVECS` frames, until the queue is empty or the sink would
    /// block. Other errors are returned; the queue stays consistent.
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<Flush> {
        let Some(queue) = self.0.as_mut() else {
            return Ok(Flush::Done);
        };
        while !queue.frames.is_empty() {
            // The slice array is built on the stack for every call: size it
            // to the queue, as most peers have a few frames, not hundreds.
            let result = if queue.frames.len() <= FEW_IOVECS {
                queue.write_once::<FEW_IOVECS>(sink)
            } else {
                queue.write_once::<MAX_IOVECS>(sink)
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => queue.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if queue.frames.capacity() > KEEP_SLOTS {
            // What a slow reader's backlog needed is not kept.
            queue.frames = VecDeque::new();
        }
        Ok(Flush::Done)
    }

    /// Frees the queue if nothing is queued (for quiet times: a busy
    /// connection reuses it from pass to pass).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Memory the queue holds for its peer: the bytes plus a handle per
    /// frame, so that a limit on it bounds memory even for tiny frames.
    pub fn footprint(&self) -> usize {
        self.queued_bytes() + self.frames() * std::mem::size_of::<SharedFrame>()
    }

    /// Whether the out-of-line queue exists (tests).
    #[cfg(test)]
    fn holds_a_queue(&self) -> bool {
        self.0.is_some()
    }
}

impl Queue {
    /// One vectored write of up to `N` frames from the front.
    fn write_once<const N: usize>(&self, sink: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(&self.frames) {
            let bytes = if count == 0 {
                &frame.as_bytes()[self.written..]
            } else {
                frame.as_bytes()
            };
            *slot = IoSlice::new(bytes);
            count += 1;
        }
        sink.write_vectored(&slices[..count])
    }

    /// Marks `n` bytes from the front as written.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
        }
        // Skip empty frames so the front always has bytes left to write.
        while self.frames.front().is_some_and(|f| f.len() == self.written) {
            self.frames.pop_front();
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink taking at most `room` bytes per call, then blocking once
    /// `budget` is spent.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let mut room = self.per_call.min(self.budget);
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(room);
                self.out.extend_from_slice(&buf[..take]);
                room -= take;
                n += take;
            }
            self.budget -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn outbox_of(frames: &[&[u8]]) -> Outbox {
        let mut outbox = Outbox::default();
        for f in frames {
            outbox.push(SharedFrame::from(f.to_vec()));
        }
        outbox
    }

    #[test]
    fn concat_builds_one_buffer() {
        let f = SharedFrame::concat(b"\x81\x05", &[b"He", b"", b"llo"]);
        assert_eq!(f.as_bytes(), b"\x81\x05Hello");
    }

    #[test]
    fn one_vectored_write_takes_every_frame() {
        let mut outbox = outbox_of(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(outbox.queued_bytes(), 6);
        let mut sink = Trickle {
            out: vec![],
            per_call: 1 << 20,
            budget: 1 << 20,
            calls: 0,
        };
        assert_eq!(outbox.write_to(&mut sink).unwrap(), Flush::Done);
        assert_eq!(sink.out, b"abcdef");
        assert_eq!(sink.calls, 1);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn partial_writes_resume_mid_frame_at_every_size() {
        for per_call in 1..8 {
            let mut outbox = outbox_of(&[b"abc", b"defg", b"h", b"ijklm"]);
            let mut sink = Trickle {
                out: vec![],
                per_call,
                budget: 5,
                calls: 0,
            };
            assert_eq!(outbox.write_to(&mut sink).unwrap(), Flush::Blocked);
            assert_eq!(outbox.queued_bytes(), 8);
            sink.budget = 100;
            assert_eq!(outbox.write_to(&mut sink).unwrap(), Flush::Done);
            assert_eq!(sink.out, b"abcdefghijklm", "per_call {per_call}");
        }
    }

    #[test]
    fn footprint_charges_each_frame_and_idle_queues_hold_nothing() {
        let mut outbox = outbox_of(&[b"ab", b"cde"]);
        assert_eq!(
            outbox.footprint(),
            5 + 2 * std::mem::size_of::<SharedFrame>()
        );
        outbox.release_if_empty();
        assert!(outbox.holds_a_queue(), "not empty: kept");
        let mut sink = Trickle {
            out: vec![],
            per_call: 100,
            budget: 100,
            calls: 0,
        };
        outbox.write_to(&mut sink).unwrap();
        assert_eq!(outbox.footprint(), 0);
        assert!(outbox.holds_a_queue(), "kept while busy");
        outbox.release_if_empty();
        assert!(!outbox.holds_a_queue());
        assert_eq!(std::mem::size_of::<Outbox>(), 8, "one word when idle");
    }

    #[test]
    fn shared_frames_are_not_copied() {
        let frame = SharedFrame::from(b"xyz".to_vec());
        let mut a = Outbox::default();
        let mut b = Outbox::default();
        a.push(frame.clone());
        b.push(frame.clone());
        assert_eq!(Rc::strong_count(&frame.0), 3);
        a.clear();
        assert_eq!(Rc::strong_count(&frame.0), 2);
    }
}
