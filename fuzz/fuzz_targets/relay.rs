//! The chat's encoding of events between nodes (`wschat::chat::relay`),
//! which arrives from other nodes through Redis: untrusted bytes.
//!
//! Invariants:
//! - Nothing panics, whatever the bytes.
//! - What decodes encodes back to the very same bytes (one encoding per
//!   event: a receiver cannot be shown two readings of one message).
//! - A decoded event's header fields hold no unit separator and its name
//!   no control character; a private body splits into recipient and text
//!   that join back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::chat::relay::{decode, parse_private, private_body};

fuzz_target!(|data: &[u8]| {
    let Some(event) = decode(data) else {
        return;
    };
    assert_eq!(event.encode(), data, "{event:?}");
    assert!(!event.node.contains('\u{1f}') && !event.from.chars().any(char::is_control));
    if let Some((to, text)) = parse_private(event.body) {
        assert_eq!(private_body(to, text), event.body);
    }
});
