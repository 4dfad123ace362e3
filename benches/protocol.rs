//! The protocol core without sockets: frame decode with unmasking, frame
//! encode, the handshake, and UTF-8 validation.
//!
//! Run: `cargo bench --bench protocol`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wschat::protocol::client;
use wschat::protocol::connection::{Connection, Event, Input, Settings};
use wschat::protocol::frame::{self, OpCode};
use wschat::protocol::handshake::{self, HeadScanner, Policy};

const SIZES: [usize; 4] = [16, 125, 4 * 1024, 64 * 1024];

/// A masked client text frame of `len` ASCII bytes.
fn client_frame(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::new();
    client::encode_frame_into(&mut out, 0x81, &payload, [0x12, 0x34, 0x56, 0x78]);
    out
}

/// Header decode, in-place unmasking and UTF-8 validation of one frame,
/// through the connection state machine, as the server does it.
fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_text_frame");
    let settings = Settings::default();
    for size in SIZES {
        let frame = client_frame(size);
        let mut work = frame.clone();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut conn = Connection::open();
            b.iter(|| {
                work.copy_from_slice(&frame);
                let mut input = Input::new(&mut work);
                match conn.next_event(&mut input, &settings) {
                    Some(Event::Message(m)) => {
                        black_box(&m);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame");
    for size in SIZES {
        let payload = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| black_box(frame::encode_frame(OpCode::Text, black_box(&payload))));
        });
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for size in SIZES {
        let mut payload = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| frame::apply_mask(black_box(&mut payload), [1, 2, 3, 4], 1));
        });
    }
    group.finish();
}

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost:8080\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) \
AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n\
Origin: http://localhost:8080\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// A browser's upgrade request: find its end, parse, check, accept key,
/// and the 101 bytes.
fn handshake(c: &mut Criterion) {
    let policy = Policy {
        max_head_bytes: 8192,
        max_headers: 64,
        ..Policy::default()
    };
    c.bench_function("handshake_browser_request", |b| {
        b.iter(|| {
            let mut scanner = HeadScanner::default();
            let end = scanner.scan(black_box(REQUEST)).expect("complete");
            match handshake::parse_request(&REQUEST[..end], &policy) {
                Ok(handshake::Request::Upgrade(u)) => black_box(handshake::accept_response(&u)),
                other => panic!("unexpected {other:?}"),
            }
        });
    });
    c.bench_function("accept_key", |b| {
        b.iter(|| {
            black_box(handshake::accept_key(black_box(
                b"dGhlIHNhbXBsZSBub25jZQ==",
            )))
        });
    });
}

/// UTF-8 validation of ASCII chat text and of mixed multi-byte text:
/// std's validator against simdutf8's (the one the connection uses).
fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_validate");
    let mixed: String = "héllo wörld — чат 🎉 "
        .chars()
        .cycle()
        .take(64 * 1024)
        .collect();
    for size in SIZES {
        let ascii = vec![b'a'; size];
        let multi = &mixed.as_bytes()[..mixed.floor_char_boundary(size)];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ascii", size), &ascii, |b, bytes| {
            b.iter(|| black_box(std::str::from_utf8(black_box(bytes)).is_ok()));
        });
        group.bench_with_input(BenchmarkId::new("mixed", size), &multi, |b, bytes| {
            b.iter(|| black_box(std::str::from_utf8(black_box(bytes)).is_ok()));
        });
        group.bench_with_input(
            BenchmarkId::new("simdutf8-ascii", size),
            &ascii,
            |b, bytes| {
                b.iter(|| black_box(simdutf8::compat::from_utf8(black_box(bytes)).is_ok()));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("simdutf8-mixed", size),
            &multi,
            |b, bytes| {
                b.iter(|| black_box(simdutf8::compat::from_utf8(black_box(bytes)).is_ok()));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decode, encode, unmask, handshake, utf8);
criterion_main!(benches);
