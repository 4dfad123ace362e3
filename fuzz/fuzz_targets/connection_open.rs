//! The connection state machine after the handshake (`Connection::open`),
//! fed arbitrary bytes in chunks the input chooses: every input byte is
//! frame data.
//!
//! Input: byte 0 bits 0-2 = number of chunk-length bytes that follow, bit
//! 3 set = a 64-byte `max_outbox_bytes`; the rest is the stream. Same invariants as the `connection` target, with
//! no HTTP response in the output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::connection::Connection;
use wschat_fuzz::{
    check_connection, small_settings, split_control, tight_outbox_settings, Verdict,
};

fuzz_target!(|data: &[u8]| {
    let (flags, lens, payload) = split_control(data);
    let settings = if flags & 1 != 0 {
        tight_outbox_settings()
    } else {
        small_settings()
    };
    check_connection(
        Connection::open,
        payload,
        lens,
        false,
        &settings,
        Verdict::Accept,
    );
});
