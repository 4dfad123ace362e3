//! Large frames fanned out without a copy per recipient: Linux's pipes,
//! `tee(2)` and `splice(2)`.
//!
//! Writing one 64 KiB frame to 19 sockets copies it 19 times into the
//! kernel; in the open-loop fan-out (S5-open) that copy,
//! `_copy_from_iter`, was a third to a half of the server's samples. Here
//! a large frame is written once into a *stage*, a pipe that holds only
//! it. Each recipient being written gets a pipe of its own, and `tee`
//! fills it from the stage by reference: "tee() duplicates up to len
//! bytes of data from the pipe referred to by the file descriptor fd_in
//! to the pipe referred to by the file descriptor fd_out. It does not
//! consume the data that is duplicated from fd_in" (tee(2)); the pages
//! are shared, not copied. `splice` then moves the recipient's pipe into
//! its socket, which keeps those pages by reference too ("splice() moves
//! data between two file descriptors without copying between kernel
//! address space and user address space", splice(2)). One copy per
//! message instead of one per recipient.
//!
//! What a recipient's pipe holds has left its outbox but not reached its
//! socket: like TLS records it counts as the stream's buffered bytes
//! (against `--max-outbox` and in backpressure), and no byte is written
//! to the socket while the pipe holds any, so frames reach the wire in
//! the outbox's order.
//!
//! Bounds: at most [`MAX_STAGES`] stages and [`MAX_LENT`] recipient pipes
//! at once. A recipient keeps its pipe only while the pipe holds bytes
//! (past `MAX_LENT`, frames are written from memory as before), and the
//! kernel memory behind them is pages the pipes share. A pipe that cannot
//! be made or sized (the per-user limit `fs.pipe-user-pages-soft`, or
//! descriptors) turns splicing off with one warning: frames are then
//! written from memory, as they always are for TLS.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use log::warn;
use mio::net::TcpStream;

use crate::protocol::outbox::{Share, SharedFrame};

/// Stages at once: the frames of the last few messages, which the
/// recipients written in one pass all ask for.
pub const MAX_STAGES: usize = 16;
/// Recipient pipes at once.
pub const MAX_LENT: usize = 64;
/// The descriptors splicing may hold: two per pipe, and `/dev/null`.
pub const DESCRIPTORS: usize = 2 * (MAX_STAGES + MAX_LENT) + 1;
/// A stage's size: 64 pages, enough for the largest frame spliced and
/// its partial first and last page.
const STAGE_BYTES: usize = 256 * 1024;
/// The largest frame spliced; longer ones are written from memory.
const MAX_FRAME: usize = 192 * 1024;
/// A recipient pipe's size: one frame at a time, as a stage.
///
/// It holds one frame because that measured best: with up to 768 KiB
/// teed before each splice into the socket, S5-open delivered 2.7 GB/s
/// (less than writing from memory, 3.0-4.1 in the same runs); splicing
/// each frame before the next is teed, 3.5-4.8 against 1.8-3.7
/// (`perf/ab.sh` with `--splice-min-size 0` as A, five pairs).
const PIPE_BYTES: usize = STAGE_BYTES;
/// The smallest frame `--splice-min-size` may ask for: below it the
/// system calls cost more than the copy they save.
pub const MIN_FRAME: usize = 16 * 1024;

/// One end of the kernel's pipe pair.
struct Pipe {
    read: OwnedFd,
    write: File,
}

impl Pipe {
    /// A non-blocking pipe of `capacity` bytes.
    fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is an array of two c_ints, which pipe2 fills.
        let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if made < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours
        // alone; each is wrapped exactly once.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: File::from_raw_fd(fds[1]),
            }
        };
        let want = libc::c_int::try_from(capacity).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own, with an int.
        let got = unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pipe)
    }
}

/// `n` from a system call returning `ssize_t`.
fn checked(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Duplicates up to `len` bytes from the front of `from` onto `to`.
fn tee(from: &Pipe, to: &Pipe, len: usize) -> io::Result<usize> {
    // SAFETY: both are pipe descriptors we own; tee reads and writes no
    // memory of ours.
    checked(unsafe {
        libc::tee(
            from.read.as_raw_fd(),
            to.write.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    })
}

/// Moves up to `len` bytes from the front of pipe `from` into `to`.
fn splice(from: &Pipe, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: `from` is a pipe we own and `to` a descriptor its owner
    // lends for the call; null offsets (neither is seekable) are allowed.
    checked(unsafe {
        libc::splice(
            from.read.as_raw_fd(),
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    })
}

/// A frame written into a pipe of its own, for recipients to `tee` from.
struct Stage {
    /// The frame it holds (a handle, so that its address cannot be
    /// reused for another frame while the stage stands for it).
    frame: Option<SharedFrame>,
    pipe: Pipe,
}

impl Stage {
    /// Whether some outbox still queues the frame it holds (else it can
    /// be emptied or reused).
    fn holds_queued(&self) -> bool {
        self.frame.as_ref().is_some_and(SharedFrame::is_shared)
    }
}

/// A recipient's pipe and the bytes in it, not yet in its socket.
pub struct Piped {
    pipe: Pipe,
    held: usize,
}

impl Piped {
    pub fn held(&self) -> usize {
        self.held
    }
}

/// The loop's stages and recipient pipes.
pub struct Splicer {
    /// Frames at least this long are spliced; 0: none.
    min_size: usize,
    stages: Vec<Stage>,
    /// The stage taken next when every stage holds a frame still queued.
    next_victim: usize,
    /// Recipient pipes not lent, empty: kept boxed, as streams hold them,
    /// so that lending one (once per large frame and recipient) does not
    /// allocate.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Piped>>,
    /// Recipient pipes lent to streams.
    lent: usize,
    /// Where a stage's frame goes when the stage is reused.
    null: Option<File>,
    /// Bytes spliced into sockets.
    spliced: u64,
}

impl Splicer {
    /// Splices frames of at least `min_size` bytes (0: none; otherwise at
    /// least `MIN_FRAME`, 16 KiB).
    pub fn new(min_size: usize) -> Splicer {
        Splicer {
            min_size: if min_size == 0 {
                0
            } else {
                min_size.max(MIN_FRAME)
            },
            stages: Vec::new(),
            next_victim: 0,
            idle: Vec::new(),
            lent: 0,
            null: None,
            spliced: 0,
        }
    }

    /// Bytes spliced into sockets so far.
    pub fn spliced(&self) -> u64 {
        self.spliced
    }

    pub fn is_on(&self) -> bool {
        self.min_size > 0
    }

    /// Whether a frame of `len` bytes is spliced.
    fn takes(&self, len: usize) -> bool {
        self.is_on() && (self.min_size..=MAX_FRAME).contains(&len)
    }

    /// Splicing stops for the life of the process.
    fn turn_off(&mut self, what: &str, e: &io::Error) {
        warn!("splice: {what}: {e}; large frames are written from memory from now on");
        self.min_size = 0;
        self.stages.clear();
        self.idle.clear();
        self.null = None;
    }

    /// Whether a recipient pipe may be lent now.
    fn can_lend(&self) -> bool {
        self.is_on() && self.lent < MAX_LENT
    }

    /// A recipient pipe, if one may be lent.
    fn lend(&mut self) -> Option<Box<Piped>> {
        if !self.can_lend() {
            return None;
        }
        let piped = match self.idle.pop() {
            Some(piped) => piped,
            None => match Pipe::new(PIPE_BYTES) {
                Ok(pipe) => Box::new(Piped { pipe, held: 0 }),
                Err(e) => {
                    self.turn_off("a recipient pipe", &e);
                    return None;
                }
            },
        };
        self.lent += 1;
        Some(piped)
    }

    /// An empty recipient pipe comes back.
    fn give_back(&mut self, piped: Box<Piped>) {
        debug_assert_eq!(piped.held, 0);
        self.lent -= 1;
        if self.is_on() {
            self.idle.push(piped);
        }
    }

    /// A lent pipe whose stream is gone: closed with what it held.
    pub fn forget(&mut self, piped: Box<Piped>) {
        self.lent -= 1;
        drop(piped);
    }

    /// The stage holding `frame`, writing it into one first if none does.
    fn stage(&mut self, frame: &SharedFrame) -> Option<&Stage> {
        let found = self
            .stages
            .iter()
            .position(|s| s.frame.as_ref().is_some_and(|f| f.same(frame)));
        let at = match found {
            Some(at) => at,
            None => self.restage(frame)?,
        };
        self.stages.get(at)
    }

    /// Writes `frame` into a free stage, or the one whose frame no outbox
    /// queues any more, or else the oldest; returns its index.
    fn restage(&mut self, frame: &SharedFrame) -> Option<usize> {
        let free = self.stages.iter().position(|s| !s.holds_queued());
        let at = match free {
            Some(at) => at,
            None if self.stages.len() < MAX_STAGES => match Pipe::new(STAGE_BYTES) {
                Ok(pipe) => {
                    self.stages.push(Stage { frame: None, pipe });
                    self.stages.len() - 1
                }
                Err(e) => {
                    self.turn_off("a stage pipe", &e);
                    return None;
                }
            },
            None => {
                self.next_victim = (self.next_victim + 1) % self.stages.len();
                self.next_victim
            }
        };
        if let Err(e) = self.empty_stage(at) {
            self.turn_off("emptying a stage", &e);
            return None;
        }
        let stage = &mut self.stages[at];
        let written = stage.pipe.write.write(frame.as_bytes()).and_then(|n| {
            if n == frame.len() {
                Ok(())
            } else {
                Err(io::Error::other(format!("{n} of {} bytes", frame.len())))
            }
        });
        match written {
            Ok(()) => {
                stage.frame = Some(frame.clone());
                Some(at)
            }
            Err(e) => {
                self.turn_off("writing a stage", &e);
                None
            }
        }
    }

    /// Throws away what stage `at` holds.
    fn empty_stage(&mut self, at: usize) -> io::Result<()> {
        let Some(frame) = self.stages[at].frame.take() else {
            return Ok(());
        };
        let null = match &self.null {
            Some(null) => null,
            None => self
                .null
                .insert(File::options().write(true).open("/dev/null")?),
        };
        let mut left = frame.len();
        while left > 0 {
            match splice(&self.stages[at].pipe, null.as_raw_fd(), left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The end of a pass: stages whose frame no outbox queues are emptied,
    /// so the frame's memory goes.
    pub fn release_unqueued(&mut self) {
        for at in 0..self.stages.len() {
            let stage = &self.stages[at];
            if stage.frame.is_some() && !stage.holds_queued() {
                if let Err(e) = self.empty_stage(at) {
                    return self.turn_off("emptying a stage", &e);
                }
            }
        }
    }

    /// The loop went quiet: stages and idle pipes are closed.
    pub fn release_idle(&mut self) {
        self.stages.clear();
        self.idle.clear();
        self.next_victim = 0;
    }
}

/// A plain socket seen by the outbox: frames the splicer takes go
/// through the stream's pipe, the rest straight to the socket, never
/// while the pipe holds bytes.
pub struct Sink<'a> {
    pub socket: &'a mut TcpStream,
    pub piped: &'a mut Option<Box<Piped>>,
    pub splicer: &'a mut Splicer,
}

impl Sink<'_> {
    /// Moves what the pipe holds into the socket: whether it is empty.
    pub fn drain(&mut self) -> io::Result<bool> {
        let Some(piped) = self.piped.as_mut() else {
            return Ok(true);
        };
        while piped.held > 0 {
            match splice(&piped.pipe, self.socket.as_raw_fd(), piped.held) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    piped.held -= n;
                    self.splicer.spliced += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// After the outbox's write: the pipe is drained as far as the socket
    /// takes, and given back once empty. Whether it is empty.
    pub fn finish(mut self) -> io::Result<bool> {
        let empty = self.drain()?;
        if empty {
            if let Some(piped) = self.piped.take() {
                self.splicer.give_back(piped);
            }
        }
        Ok(empty)
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.drain()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.socket.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.drain()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.socket.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Share for Sink<'_> {
    /// A frame of the spliced sizes, when this stream has a pipe or may
    /// be lent one: past `MAX_LENT` the frames are written from memory in
    /// runs, as if splicing were off, not one `share` refusal at a time.
    fn may_share(&self, frame: &SharedFrame) -> bool {
        self.splicer.takes(frame.len()) && (self.piped.is_some() || self.splicer.can_lend())
    }

    fn share(&mut self, frame: &SharedFrame) -> io::Result<Option<usize>> {
        if self.piped.is_none() {
            *self.piped = self.splicer.lend();
        }
        let Some(held) = self.piped.as_ref().map(|p| p.held) else {
            return Ok(None);
        };
        // One frame in the pipe at a time (see `PIPE_BYTES`). Declining is
        // always safe (what is written from memory waits for the pipe to
        // drain); blocking is only right once the socket has said so.
        if held > 0 && !self.drain()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Some(stage) = self.splicer.stage(frame) else {
            return Ok(None);
        };
        let Some(piped) = self.piped.as_mut() else {
            return Ok(None);
        };
        match tee(&stage.pipe, &piped.pipe, frame.len()) {
            Ok(0) => Ok(None),
            Ok(n) => {
                piped.held += n;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::outbox::{Flush, Gather, Outbox};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream as StdStream};

    /// A connected pair on loopback: our non-blocking end, and the
    /// reader's.
    fn connection() -> (TcpStream, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reader = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (TcpStream::from_std(ours), reader)
    }

    fn frame(len: usize, seed: u8) -> SharedFrame {
        SharedFrame::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    /// One recipient: our end of its connection, the reader's, its
    /// outbox and its pipe.
    struct Recipient {
        ours: TcpStream,
        reader: StdStream,
        outbox: Outbox,
        piped: Option<Box<Piped>>,
    }

    impl Recipient {
        /// A recipient with `frames` queued, and the bytes it should get.
        fn with(frames: &[SharedFrame]) -> (Recipient, Vec<u8>) {
            let (ours, reader) = connection();
            let mut outbox = Outbox::default();
            frames.iter().for_each(|f| outbox.push(f.clone()));
            let expected = frames.iter().flat_map(|f| f.as_bytes().to_vec()).collect();
            let recipient = Recipient {
                ours,
                reader,
                outbox,
                piped: None,
            };
            (recipient, expected)
        }

        /// One write of the outbox through a sink, and the pipe drained as
        /// far as the socket takes: the outbox's flush and whether the
        /// pipe is empty.
        fn write(&mut self, splicer: &mut Splicer, gather: &mut Gather) -> (Flush, bool) {
            let mut sink = Sink {
                socket: &mut self.ours,
                piped: &mut self.piped,
                splicer,
            };
            let flush = self.outbox.write_sharing(&mut sink, gather).unwrap();
            (flush, sink.finish().unwrap())
        }

        /// Writes until everything is out, reading the reader's end
        /// meanwhile; returns what the reader got.
        fn deliver(&mut self, splicer: &mut Splicer, total: usize) -> Vec<u8> {
            let mut got = Vec::new();
            let mut gather = Gather::default();
            let mut buf = vec![0; 1 << 20];
            loop {
                let (flush, empty) = self.write(splicer, &mut gather);
                if flush == Flush::Done && empty && got.len() == total {
                    return got;
                }
                let n = self.reader.read(&mut buf).unwrap();
                assert!(n > 0, "the reader's end closed");
                got.extend_from_slice(&buf[..n]);
            }
        }
    }

    #[test]
    fn large_frames_reach_every_socket_in_order_between_small_ones() {
        let mut splicer = Splicer::new(MIN_FRAME);
        let frames = [
            frame(100, 1),
            frame(64 * 1024 + 10, 2),
            frame(64 * 1024 + 10, 3),
            frame(5, 4),
            frame(MAX_FRAME, 5),
            frame(MAX_FRAME + 1, 6),
            frame(16 * 1024, 7),
        ];
        for _ in 0..3 {
            let (mut recipient, expected) = Recipient::with(&frames);
            let got = recipient.deliver(&mut splicer, expected.len());
            assert!(got == expected, "the bytes arrived as queued");
            assert!(recipient.piped.is_none(), "an empty pipe is given back");
        }
        let large = 2 * (64 * 1024 + 10) + MAX_FRAME + 16 * 1024;
        assert_eq!(splicer.spliced(), 3 * large as u64);
        assert_eq!(splicer.stages.len(), 4, "each large frame staged once");
        assert_eq!(splicer.lent, 0);
    }

    #[test]
    fn a_full_socket_leaves_bytes_in_the_pipe_until_it_drains() {
        let mut splicer = Splicer::new(MIN_FRAME);
        // Far more than the socket buffers take without a read.
        let frames: Vec<SharedFrame> = (0..200).map(|i| frame(64 * 1024, i as u8)).collect();
        let (mut recipient, expected) = Recipient::with(&frames);
        let (flush, empty) = recipient.write(&mut splicer, &mut Gather::default());
        assert_eq!(flush, Flush::Blocked);
        assert!(!empty, "the pipe holds bytes");
        let held = recipient.piped.as_ref().unwrap().held();
        assert!(held > 0 && held <= 64 * 1024, "held {held}");
        assert_eq!(splicer.lent, 1);
        let got = recipient.deliver(&mut splicer, expected.len());
        assert!(got == expected, "the bytes arrived as queued");
        assert!(splicer.stages.len() <= MAX_STAGES);
    }

    #[test]
    fn stages_are_emptied_once_no_outbox_queues_their_frame() {
        let mut splicer = Splicer::new(MIN_FRAME);
        let queued = frame(20_000, 1);
        let (mut recipient, _) = Recipient::with(std::slice::from_ref(&queued));
        recipient.deliver(&mut splicer, 20_000);
        splicer.release_unqueued();
        assert!(splicer.stages[0].frame.is_some(), "still queued elsewhere");
        drop(queued);
        splicer.release_unqueued();
        assert!(splicer.stages[0].frame.is_none());
        splicer.release_idle();
        assert!(splicer.stages.is_empty() && splicer.idle.is_empty());
    }

    #[test]
    fn past_the_lent_pipes_frames_are_written_from_memory() {
        let mut splicer = Splicer::new(MIN_FRAME);
        splicer.lent = MAX_LENT;
        let frames: Vec<SharedFrame> = (0..4).map(|i| frame(64 * 1024, i)).collect();
        let (mut recipient, expected) = Recipient::with(&frames);
        let got = recipient.deliver(&mut splicer, expected.len());
        assert!(got == expected, "the bytes arrived as queued");
        assert_eq!(splicer.spliced(), 0);
        assert!(splicer.stages.is_empty(), "nothing was staged");
    }

    #[test]
    fn off_or_out_of_range_frames_are_not_taken() {
        let off = Splicer::new(0);
        assert!(!off.takes(64 * 1024));
        let on = Splicer::new(1);
        assert_eq!(on.min_size, MIN_FRAME, "raised to the smallest allowed");
        assert!(!on.takes(MIN_FRAME - 1));
        assert!(on.takes(MIN_FRAME));
        assert!(on.takes(MAX_FRAME));
        assert!(!on.takes(MAX_FRAME + 1));
    }
}
