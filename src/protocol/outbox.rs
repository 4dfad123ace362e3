//! A connection's queue of outgoing bytes.
//!
//! A broadcast is encoded once into a [`SharedFrame`] (a reference-counted
//! byte slice) and every recipient's outbox holds a handle to the same
//! bytes, never a copy. [`Outbox::write_to`] hands as many queued frames as
//! fit to one vectored write (the kernel's `writev`), so a socket gets one
//! system call per loop pass however many messages were queued for it:
//! batching is where the time goes on loopback, not copying.
//!
//! One copy is made on purpose, at write time: runs of small frames
//! (a saturated room queues dozens of 78-byte frames per recipient per
//! pass) are gathered into the loop's one [`Gather`] buffer and handed to
//! the kernel as one slice ([`Outbox::write_gathered`]). The kernel copies
//! every byte anyway, but pays a fixed cost per slice that dwarfs a small
//! copy: in `perf record` of a saturated room (S2W, 85 frames of 78 bytes
//! per `writev` on the median) its per-slice copy, `_copy_from_iter`, was
//! 42% of the server's samples; gathered, it is 6%, and the copy in user
//! space (`memmove`) 3%. Nothing is allocated per recipient: the buffer is
//! reused by every write of the loop.
//!
//! Large frames can go the other way: a sink that implements [`Share`]
//! (the loop's splicing of large frames through kernel pipes, in
//! `net::stream::splice`) takes them by reference, a whole frame at a
//! time, and the runs between them are written as above.
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

    /// Whether `self` and `other` are handles to the same bytes.
    pub fn same(&self, other: &SharedFrame) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Whether another handle to these bytes exists (some outbox still
    /// queues them).
    pub fn is_shared(&self) -> bool {
        Rc::strong_count(&self.0) > 1
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

/// Frames up to this size are gathered; larger ones (a 64 KiB message)
/// are written from their shared bytes, where a copy would cost more than
/// the kernel's per-slice overhead it saves.
const GATHER_FRAME_MAX: usize = 1024;
/// What one write gathers at most; the buffer never grows past it.
const GATHER_BYTES: usize = 16 * 1024;

/// The loop's buffer for gathering runs of small queued frames into one
/// slice of a vectored write (see the module docs). One per loop, made on
/// first use, 16 KiB long (`GATHER_BYTES`).
#[derive(Debug, Default)]
pub struct Gather(Vec<u8>);

/// One slice of a gathered write: bytes of the [`Gather`] buffer, or a
/// queued frame written from its own bytes.
#[derive(Clone, Copy)]
enum Part {
    Gathered { from: usize, to: usize },
    Frame(usize),
}

/// A sink that takes some frames by reference instead of by their bytes,
/// for [`Outbox::write_sharing`].
pub trait Share: Write {
    /// Whether `frame` is one to offer to [`Share::share`] when none of it
    /// is written yet (a check of its size: `share` may still decline).
    /// A run written from memory stops before such a frame.
    fn may_share(&self, frame: &SharedFrame) -> bool;

    /// Takes `frame`, none of it written yet: `Some(n)` bytes from its
    /// front (all of it or fewer: the rest is written from its bytes),
    /// `None` to have it written from its bytes instead, or `WouldBlock`.
    fn share(&mut self, frame: &SharedFrame) -> io::Result<Option<usize>>;
}

/// Any writer, as a sink that shares nothing.
struct Copying<'a, W>(&'a mut W);

impl<W: Write> Write for Copying<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Share for Copying<'_, W> {
    fn may_share(&self, _: &SharedFrame) -> bool {
        false
    }

    fn share(&mut self, _: &SharedFrame) -> io::Result<Option<usize>> {
        Ok(None)
    }
}

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
        self.write_with(&mut Copying(sink), None)
    }

    /// As [`Outbox::write_to`], with runs of small frames gathered into
    /// `gather` first when more than one frame waits (a lone frame is
    /// written from its shared bytes): for a kernel socket, where each
    /// slice has its cost.
    pub fn write_gathered(
        &mut self,
        sink: &mut impl Write,
        gather: &mut Gather,
    ) -> io::Result<Flush> {
        self.write_with(&mut Copying(sink), Some(gather))
    }

    /// As [`Outbox::write_gathered`], with the frames `sink` shares handed
    /// to it by reference, in their place in the queue.
    pub fn write_sharing(
        &mut self,
        sink: &mut impl Share,
        gather: &mut Gather,
    ) -> io::Result<Flush> {
        self.write_with(sink, Some(gather))
    }

    fn write_with(
        &mut self,
        sink: &mut impl Share,
        mut gather: Option<&mut Gather>,
    ) -> io::Result<Flush> {
        let Some(queue) = self.0.as_mut() else {
            return Ok(Flush::Done);
        };
        while let Some(front) = queue.frames.front() {
            let shared = if queue.written == 0 && sink.may_share(front) {
                sink.share(front)
            } else {
                Ok(None)
            };
            let result = match shared {
                Ok(Some(n)) => Ok(n),
                Ok(None) => {
                    // The slice array is built on the stack for every call:
                    // size it to the queue, as most peers have a few frames,
                    // not hundreds.
                    let few = queue.frames.len() <= FEW_IOVECS;
                    match gather.as_deref_mut() {
                        Some(gather) if queue.frames.len() > 1 && few => {
                            queue.write_gathered::<FEW_IOVECS>(sink, gather)
                        }
                        Some(gather) if queue.frames.len() > 1 => {
                            queue.write_gathered::<MAX_IOVECS>(sink, gather)
                        }
                        _ if few => queue.write_once::<FEW_IOVECS>(sink),
                        _ => queue.write_once::<MAX_IOVECS>(sink),
                    }
                }
                Err(e) => Err(e),
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
    /// The bytes of frame `i` still to write.
    fn unwritten<'a>(&'a self, i: usize, frame: &'a SharedFrame) -> &'a [u8] {
        if i == 0 {
            &frame.as_bytes()[self.written..]
        } else {
            frame.as_bytes()
        }
    }

    /// The frames of the run at the front: up to the next one `sink`
    /// would take by reference (the front frame is written whatever it is).
    fn run<'q, 's, S: Share>(
        &'q self,
        sink: &'s S,
    ) -> impl Iterator<Item = &'q [u8]> + use<'q, 's, S> {
        self.frames
            .iter()
            .enumerate()
            .take_while(|&(i, frame)| i == 0 || !sink.may_share(frame))
            .map(|(i, frame)| self.unwritten(i, frame))
    }

    /// One vectored write of up to `N` frames from the front.
    fn write_once<const N: usize>(&self, sink: &mut impl Share) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for (slot, bytes) in slices.iter_mut().zip(self.run(sink)) {
            *slot = IoSlice::new(bytes);
            count += 1;
        }
        sink.write_vectored(&slices[..count])
    }

    /// One vectored write of up to `N` slices from the front,
    /// each run of small frames copied into `gather` and written as one
    /// slice while the buffer has room. The bytes handed over are the
    /// queue's, in order, so [`Queue::advance`] needs to know nothing of
    /// it.
    fn write_gathered<const N: usize>(
        &self,
        sink: &mut impl Share,
        gather: &mut Gather,
    ) -> io::Result<usize> {
        let buf = &mut gather.0;
        buf.clear();
        buf.reserve_exact(GATHER_BYTES);
        let mut plan = [Part::Frame(0); N];
        let mut parts = 0;
        for (i, bytes) in self.run(sink).enumerate() {
            let small = bytes.len() <= GATHER_FRAME_MAX && buf.len() + bytes.len() <= GATHER_BYTES;
            match plan[..parts].last_mut() {
                // A gathered part last means the frame before was small:
                // this one continues its run.
                Some(Part::Gathered { to, .. }) if small => *to += bytes.len(),
                _ if parts == N => break,
                _ => {
                    plan[parts] = if small {
                        Part::Gathered {
                            from: buf.len(),
                            to: buf.len() + bytes.len(),
                        }
                    } else {
                        Part::Frame(i)
                    };
                    parts += 1;
                }
            }
            if small {
                buf.extend_from_slice(bytes);
            }
        }
        let mut slices = [IoSlice::new(&[]); N];
        for (slot, part) in slices.iter_mut().zip(&plan[..parts]) {
            *slot = IoSlice::new(match *part {
                Part::Gathered { from, to } => &buf[from..to],
                Part::Frame(i) => self.unwritten(i, &self.frames[i]),
            });
        }
        sink.write_vectored(&slices[..parts])
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

    /// A sink that takes everything and records each call's slices
    /// (length and address).
    #[derive(Default)]
    struct Slices {
        out: Vec<u8>,
        calls: Vec<Vec<(usize, *const u8)>>,
    }

    impl Write for Slices {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls
                .push(bufs.iter().map(|b| (b.len(), b.as_ptr())).collect());
            let before = self.out.len();
            bufs.iter().for_each(|b| self.out.extend_from_slice(b));
            Ok(self.out.len() - before)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Frames of `sizes` bytes, each filled with its own letter.
    fn lettered(sizes: &[usize]) -> (Outbox, Vec<u8>) {
        let mut outbox = Outbox::default();
        let mut all = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let frame = vec![b'a' + (i % 26) as u8; n];
            all.extend_from_slice(&frame);
            outbox.push(SharedFrame::from(frame));
        }
        (outbox, all)
    }

    #[test]
    fn runs_of_small_frames_are_one_slice_and_large_frames_their_own() {
        let (mut outbox, all) = lettered(&[78, 78, 78, 2000, 78, 0, 78]);
        let large = outbox.0.as_ref().unwrap().frames[3].as_bytes().as_ptr();
        let mut sink = Slices::default();
        let mut gather = Gather::default();
        assert_eq!(
            outbox.write_gathered(&mut sink, &mut gather).unwrap(),
            Flush::Done
        );
        assert_eq!(sink.out, all);
        let lens: Vec<usize> = sink.calls[0].iter().map(|s| s.0).collect();
        assert_eq!(lens, [234, 2000, 156]);
        assert_eq!(sink.calls[0][1].1, large, "a large frame is not copied");
        assert_eq!(sink.calls.len(), 1);
    }

    #[test]
    fn a_lone_frame_is_written_from_its_shared_bytes() {
        let (mut outbox, all) = lettered(&[78]);
        let bytes = outbox.0.as_ref().unwrap().frames[0].as_bytes().as_ptr();
        let mut sink = Slices::default();
        outbox
            .write_gathered(&mut sink, &mut Gather::default())
            .unwrap();
        assert_eq!(sink.out, all);
        assert_eq!(sink.calls, [vec![(78, bytes)]]);
    }

    #[test]
    fn gathered_writes_resume_mid_frame_at_every_size() {
        let sizes = [3, 1500, 1, 4, 0, 2, 1025, 1024, 5];
        for per_call in 1..40 {
            let (mut outbox, all) = lettered(&sizes);
            let mut gather = Gather::default();
            let mut sink = Trickle {
                out: vec![],
                per_call,
                budget: 7,
                calls: 0,
            };
            assert_eq!(
                outbox.write_gathered(&mut sink, &mut gather).unwrap(),
                Flush::Blocked
            );
            assert_eq!(outbox.queued_bytes(), all.len() - 7);
            sink.budget = usize::MAX;
            assert_eq!(
                outbox.write_gathered(&mut sink, &mut gather).unwrap(),
                Flush::Done
            );
            assert_eq!(sink.out, all, "per_call {per_call}");
            assert!(outbox.is_empty());
        }
    }

    #[test]
    fn gathering_stops_at_the_buffer_s_size_and_the_slice_limit() {
        // 100 KiB of small frames: one write gathers at most GATHER_BYTES
        // and hands over at most MAX_IOVECS slices.
        let (mut outbox, all) = lettered(&[100; 1024]);
        let mut sink = Slices::default();
        let mut gather = Gather::default();
        outbox.write_gathered(&mut sink, &mut gather).unwrap();
        assert_eq!(sink.out, all);
        let first = &sink.calls[0];
        assert_eq!(first[0].0, GATHER_BYTES / 100 * 100);
        assert!(first.len() <= MAX_IOVECS);
        assert!(
            gather.0.capacity() < 2 * GATHER_BYTES,
            "the buffer did not grow"
        );
    }

    /// A sink that takes frames of `min` bytes or more by reference, at
    /// most `take` bytes of each (declining every `decline`th offer), and
    /// records what came how: `(true, bytes)` shared, `(false, bytes)`
    /// written.
    struct Sharer {
        min: usize,
        take: usize,
        offers: usize,
        decline: usize,
        log: Vec<(bool, Vec<u8>)>,
    }

    impl Sharer {
        fn new(min: usize, take: usize, decline: usize) -> Sharer {
            Sharer {
                min,
                take,
                offers: 0,
                decline,
                log: Vec::new(),
            }
        }

        fn bytes(&self) -> Vec<u8> {
            self.log.iter().flat_map(|(_, b)| b.clone()).collect()
        }
    }

    impl Write for Sharer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
            let n = bytes.len();
            self.log.push((false, bytes));
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Share for Sharer {
        fn may_share(&self, frame: &SharedFrame) -> bool {
            frame.len() >= self.min
        }

        fn share(&mut self, frame: &SharedFrame) -> io::Result<Option<usize>> {
            self.offers += 1;
            if self.decline > 0 && self.offers.is_multiple_of(self.decline) {
                return Ok(None);
            }
            let n = frame.len().min(self.take);
            self.log.push((true, frame.as_bytes()[..n].to_vec()));
            Ok(Some(n))
        }
    }

    #[test]
    fn shared_frames_go_by_reference_in_their_place_and_runs_stop_before_them() {
        let (mut outbox, all) = lettered(&[10, 10, 500, 10, 500, 500, 10]);
        let mut sink = Sharer::new(100, usize::MAX, 0);
        let mut gather = Gather::default();
        let flush = outbox.write_sharing(&mut sink, &mut gather).unwrap();
        assert_eq!(flush, Flush::Done);
        assert_eq!(sink.bytes(), all);
        let how: Vec<(bool, usize)> = sink.log.iter().map(|(s, b)| (*s, b.len())).collect();
        assert_eq!(
            how,
            [
                (false, 20),
                (true, 500),
                (false, 10),
                (true, 500),
                (true, 500),
                (false, 10)
            ]
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_frame_shared_in_part_or_declined_is_written_from_its_bytes() {
        for decline in [0, 1, 2, 3] {
            let (mut outbox, all) = lettered(&[500, 10, 500, 500, 10]);
            let mut sink = Sharer::new(100, 300, decline);
            let mut gather = Gather::default();
            let flush = outbox.write_sharing(&mut sink, &mut gather).unwrap();
            assert_eq!(flush, Flush::Done);
            assert_eq!(sink.bytes(), all, "decline every {decline}");
            assert!(sink.log.iter().all(|(shared, b)| !shared || b.len() <= 300));
        }
    }

    #[test]
    fn a_sink_that_would_block_on_a_shared_frame_leaves_it_queued() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Share for Full {
            fn may_share(&self, _: &SharedFrame) -> bool {
                true
            }
            fn share(&mut self, _: &SharedFrame) -> io::Result<Option<usize>> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        let (mut outbox, _) = lettered(&[500, 10]);
        let flush = outbox
            .write_sharing(&mut Full, &mut Gather::default())
            .unwrap();
        assert_eq!(flush, Flush::Blocked);
        assert_eq!(outbox.queued_bytes(), 510);
    }
}
