//! `Sec-WebSocket-Extensions` parsing and `permessage-deflate`
//! negotiation (`protocol::extensions`).
//!
//! Input: byte 0 and the chunk-length bytes after it (`split_control`)
//! cut the rest into header lines.
//!
//! Invariants:
//! - No panic, whatever the bytes.
//! - One linear list: when every line parses on its own, the lines joined
//!   with ", " (RFC 7230 §3.2.2's equivalence) parse to the same offers,
//!   in the same order; when one line is malformed, so is the joined
//!   value. `negotiate` on the lines and on the joined value agree.
//! - Bounds and grammar: at most `MAX_OFFERS` offers and `MAX_PARAMS`
//!   parameters each; every name and value is a non-empty token.
//! - An agreement's response header, read back as an offer, is accepted
//!   with the same terms, and always names both no_context_takeovers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::extensions::{accept, negotiate, parse, MAX_OFFERS, MAX_PARAMS};
use wschat_fuzz::{chunks, split_control};

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let (_, lens, payload) = split_control(data);
    let lines = chunks(payload, lens);
    let per_line = parse(lines.iter().copied());
    let joined = lines.join(&b", "[..]);
    let whole = parse([&joined[..]]);
    match &per_line {
        Ok(offers) => {
            assert_eq!(whole.as_ref().ok(), Some(offers), "split and joined differ");
            assert!(offers.len() <= MAX_OFFERS);
            for offer in offers {
                assert!(is_token(offer.name), "{:?}", offer.name);
                assert!(offer.params.len() <= MAX_PARAMS);
                for p in &offer.params {
                    assert!(is_token(p.name), "{:?}", p.name);
                    if let Some(v) = &p.value {
                        assert!(is_token(v), "{v:?}");
                    }
                }
            }
        }
        Err(_) => assert!(whole.is_err(), "a malformed line joined into a valid list"),
    }
    let agreed = negotiate(lines.iter().copied());
    assert_eq!(agreed.is_ok(), per_line.is_ok());
    if per_line.is_ok() {
        assert_eq!(agreed, negotiate([&joined[..]]));
    }
    if let Ok(Some(n)) = agreed {
        let response = n.response();
        assert!(response.starts_with(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
        let back = parse([response.as_bytes()]).expect("our response parses");
        assert_eq!(back.len(), 1);
        assert_eq!(accept(&back[0]), Some(n));
        for bits in [n.server_max_window_bits, n.client_max_window_bits]
            .into_iter()
            .flatten()
        {
            assert!((8..=15).contains(&bits));
        }
    }
});
