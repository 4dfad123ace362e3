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

use wschat::chat::{Chat, ChatConfig};
use wschat::net::peers::encode_message;
use wschat::protocol::client;
use wschat::protocol::connection::{Connection, Event, Input, Message, Settings};
use wschat::service::{self, Clock, Context, Kind, Outgoing, PeerId, Service, Upgrade};

/// In-memory peers: what the server's hub does, minus the sockets.
struct Peers {
    clock: Clock,
    conns: Vec<Connection>,
    settings: Settings,
    dirty: Vec<PeerId>,
}

impl Context for Peers {
    fn clock(&self) -> Clock {
        self.clock
    }

    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> Outgoing {
        encode_message(kind, parts)
    }

    fn deliver(&mut self, to: PeerId, message: &Outgoing) {
        if self.conns[to].send(message.plain(), &self.settings).is_ok() {
            self.dirty.push(to);
        }
    }

    fn close(&mut self, _to: PeerId, _code: u16, _reason: &'static str) {}

    fn answer_http(
        &mut self,
        _ticket: wschat::service::HttpTicket,
        _reply: wschat::service::HttpReply,
    ) {
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
        let mut chat = Chat::new(ChatConfig::default());
        let mut peers = Peers {
            clock: Clock::read(),
            conns: (0..n).map(|_| Connection::open()).collect(),
            settings: Settings::default(),
            dirty: Vec::new(),
        };
        for id in 0..n {
            let remote = SocketAddr::from(([127, 0, 0, 1], 10_000 + id as u16));
            let upgrade = Upgrade {
                remote,
                target: "/",
                protocol: None,
                cookie: None,
            };
            let admitted = chat.admit(&upgrade).expect("the lobby admits");
            chat.on_open(id, &upgrade, admitted, &mut peers);
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
                let Some(Event::Message(Message::Text(text))) =
                    peers.conns[0].next_event(&mut input, &Settings::default())
                else {
                    panic!("one text message");
                };
                chat.on_message(0, service::Message::Text(&text), &mut peers);
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
