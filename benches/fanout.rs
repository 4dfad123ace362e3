//! One chat message to N recipients through the real chat policy,
//! connection and outbox code, with no sockets: the parsing of the
//! sender's frame, the policy's fan-out (encode once, share the frame),
//! each recipient's queue, and the vectored write into a sink.
//!
//! Criterion reports the time per message; divide by N for the cost per
//! recipient (printed by `cargo bench --bench fanout` as ns/recipient in
//! the throughput line, as "elements").
//!
//! Run: `cargo bench --bench fanout`.

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wschat::chat::{Chat, ChatConfig, Mode};
use wschat::protocol::client;
use wschat::protocol::connection::{Connection, Event, Input, Settings};
use wschat::protocol::frame::{self, OpCode};
use wschat::protocol::outbox::SharedFrame;
use wschat::service::{Kind, Opened, Outbound, PeerId, Service};

/// In-memory peers: what the server's hub does, minus the sockets.
struct Peers {
    conns: Vec<Connection>,
    settings: Settings,
    dirty: Vec<PeerId>,
}

impl Outbound for Peers {
    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> SharedFrame {
        let opcode = match kind {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        };
        let len = parts.iter().map(|p| p.len()).sum();
        let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
        SharedFrame::concat(frame::encode_header(true, opcode, len, &mut header), parts)
    }

    fn deliver(&mut self, to: PeerId, frame: &SharedFrame) {
        if self.conns[to].send(frame, &self.settings).is_ok() {
            self.dirty.push(to);
        }
    }
}

/// A socket that takes everything and keeps nothing.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn masked_text(text: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    client::encode_frame_into(&mut frame, 0x81, text, [9, 8, 7, 6]);
    frame
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_64B");
    for n in [10usize, 100, 1_000, 10_000] {
        let mut chat = Chat::new(ChatConfig::new(Mode::Broadcast));
        let mut peers = Peers {
            conns: (0..n).map(|_| Connection::open()).collect(),
            settings: Settings::default(),
            dirty: Vec::new(),
        };
        for id in 0..n {
            let remote = SocketAddr::from(([127, 0, 0, 1], 10_000 + id as u16));
            chat.on_open(
                id,
                Opened {
                    remote,
                    target: "/",
                    protocol: None,
                },
                &mut peers,
            );
        }
        for conn in &mut peers.conns {
            conn.outbox_mut().write_to(&mut Sink).expect("sink");
        }
        peers.dirty.clear();
        let frame = masked_text(&[b'm'; 64]);
        let mut work = frame.clone();
        group.throughput(Throughput::Elements((n - 1) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                work.copy_from_slice(&frame);
                let mut input = Input::new(&mut work);
                let Some(Event::Message(message)) =
                    peers.conns[0].next_event(&mut input, &Settings::default())
                else {
                    panic!("one message");
                };
                chat.on_message(0, message, &mut peers);
                for &to in &peers.dirty {
                    peers.conns[to]
                        .outbox_mut()
                        .write_to(&mut Sink)
                        .expect("sink");
                }
                black_box(peers.dirty.len());
                peers.dirty.clear();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
