//! The connection state machine, fed an upgrade request and then
//! arbitrary bytes, in chunks the input chooses.
//!
//! Input: byte 0 bits 0-2 = number of chunk-length bytes that follow; bit 3
//! set = no fixed upgrade request (the fuzz bytes are the whole stream, so
//! the head itself is fuzzed); bit 4 set = a 64-byte `max_outbox_bytes`;
//! bit 5 set = the caller refuses valid upgrades (`respond` 403) instead
//! of accepting them. The rest is the stream.
//!
//! Invariants (see `wschat_fuzz::check_connection`): every byte is
//! consumed; the same events and the same frames out whether fed in the
//! chosen chunks, whole, or byte by byte; the handshake outcome first and
//! once (and the `101` queued only once the caller accepts); at most one
//! Closed, no message after it; messages within
//! `max_message_size`; text valid UTF-8; the output is an HTTP response
//! then valid server frames ending with a Close carrying the code reported;
//! a peer that never reads cannot make the connection queue more than
//! `max_outbox_bytes` + `OUTBOX_SLACK` of its own replies (Pongs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::connection::Connection;
use wschat_fuzz::{
    check_connection, small_settings, split_control, tight_outbox_settings, Seen, Verdict, UPGRADE,
    UPGRADE_ACCEPT,
};

fuzz_target!(|data: &[u8]| {
    let (flags, lens, payload) = split_control(data);
    let raw = flags & 1 != 0;
    let mut stream = Vec::with_capacity(UPGRADE.len() + payload.len());
    if !raw {
        stream.extend_from_slice(UPGRADE);
    }
    stream.extend_from_slice(payload);
    let settings = if flags & 2 != 0 {
        tight_outbox_settings()
    } else {
        small_settings()
    };
    let verdict = if flags & 4 != 0 {
        Verdict::Refuse
    } else {
        Verdict::Accept
    };
    let run = check_connection(Connection::new, &stream, lens, true, &settings, verdict);
    if !raw {
        // The fixed request is always valid, with the RFC's accept value.
        match run.events.first() {
            Some(Seen::Upgrade {
                target,
                protocol,
                accept,
            }) => {
                assert_eq!(target, "/chat");
                assert_eq!(*protocol, None);
                assert_eq!(accept, UPGRADE_ACCEPT);
            }
            other => panic!("the fixed upgrade request was not valid: {other:?}"),
        }
    }
});
