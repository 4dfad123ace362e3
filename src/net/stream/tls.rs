//! A TLS peer's byte stream: rustls' `ServerConnection` beside the
//! socket, driven by hand in the loop's readiness model.
//!
//! Reading: records are read from the socket into rustls and decrypted,
//! and the plaintext is handed out until the caller's buffer is full or
//! the socket has nothing more. Readiness is edge-triggered, so a read
//! that returns less than asked must mean the socket said `WouldBlock`
//! with rustls' plaintext drained: [`TlsIo::drained`] reports exactly that,
//! and no decrypted byte waits inside rustls without a reason to be read
//! again (a full buffer or a spent read budget is read again by the loop).
//!
//! Writing: the outbox's frames are copied into rustls in
//! [`RECORD_PLAINTEXT`] pieces, so small frames share a record instead of
//! taking one each, and the records are handed to the socket by
//! `write_tls`, which is one vectored write of everything rustls holds.
//! rustls' buffers are bounded ([`BUFFER_LIMIT`]); what they hold counts
//! toward the peer's slow-consumer limit.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rustls::ServerConnection;

use crate::protocol::outbox::{Flush, Outbox};

/// The most plaintext a TLS record carries (RFC 8446 §5.1: "The length
/// MUST NOT exceed 2^14 bytes").
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// Bytes rustls may hold unsent, as records waiting for the socket (and,
/// before the handshake ends, as plaintext waiting for keys). Four full
/// records: enough that one `write_tls` fills a socket's send buffer.
pub const BUFFER_LIMIT: usize = 4 * (RECORD_PLAINTEXT + 64);

pub struct TlsIo {
    pub socket: TcpStream,
    conn: ServerConnection,
    /// The last read ended on the socket's `WouldBlock` with no plaintext
    /// left inside rustls.
    drained: bool,
    /// TLS bytes rustls holds for the socket, as of the last operation.
    pending: usize,
}

impl TlsIo {
    pub fn new(socket: TcpStream, mut conn: ServerConnection) -> TlsIo {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        TlsIo {
            socket,
            conn,
            drained: false,
            pending: 0,
        }
    }

    pub fn drained(&self) -> bool {
        self.drained
    }

    pub fn buffered(&self) -> usize {
        self.pending
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Fills `buf` with plaintext, reading and decrypting records as
    /// needed; handshake records rustls produces meanwhile are sent at
    /// once. `Ok(0)` is the end of the stream (close_notify or the socket's
    /// EOF); a TLS error is `InvalidData`, after the alert is sent.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.drained = false;
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(n) => {
                    filled += n;
                    if n == 0 || filled == buf.len() {
                        // Full, or the peer's close_notify (then Ok(0)
                        // next time, once this plaintext is handed out).
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.socket) {
                Ok(0) => return Ok(filled),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert rustls queued is worth one try.
                let _ = self.conn.write_tls(&mut self.socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.conn.wants_write() {
                self.flush_records()?;
            }
        }
    }

    /// Encrypts as much of `outbox` as rustls' buffer takes and writes the
    /// records, until the outbox is empty or the socket is full. Returns
    /// whether TLS bytes are left waiting for the socket.
    pub fn write_from(&mut self, outbox: &mut Outbox) -> io::Result<Flush> {
        loop {
            if self.flush_records()? == Flush::Blocked {
                return Ok(Flush::Blocked);
            }
            if outbox.is_empty() || self.conn.is_handshaking() {
                // Before the handshake ends there are no keys: the
                // frames wait in the outbox, not in rustls.
                return Ok(Flush::Done);
            }
            let mut sink = Records {
                conn: &mut self.conn,
            };
            outbox.write_to(&mut sink)?;
        }
    }

    /// Hands the socket everything rustls holds, one vectored write at a
    /// time.
    fn flush_records(&mut self) -> io::Result<Flush> {
        let result = loop {
            if !self.conn.wants_write() {
                break Ok(Flush::Done);
            }
            match self.conn.write_tls(&mut self.socket) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.pending = self
            .conn
            .process_new_packets()
            .map_or(0, |state| state.tls_bytes_to_write());
        result
    }

    /// Says close_notify (RFC 8446 §6.1: each party "MUST send a
    /// close_notify alert before closing its write side"), best effort.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_records();
    }
}

/// The outbox's sink: plaintext copied into rustls a record's worth at a
/// time, so a pass's small frames share records. A full rustls buffer is
/// `WouldBlock`, which stops the outbox until the socket drains it.
struct Records<'a> {
    conn: &'a mut ServerConnection,
}

impl Write for Records<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut record = [0u8; RECORD_PLAINTEXT];
        let mut len = 0;
        for buf in bufs {
            let take = buf.len().min(RECORD_PLAINTEXT - len);
            record[len..len + take].copy_from_slice(&buf[..take]);
            len += take;
            if len == RECORD_PLAINTEXT {
                break;
            }
        }
        match self.conn.writer().write(&record[..len])? {
            0 if len > 0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
