//! The poll loop: one thread, one `mio::Poll`, every client in a `Slab`,
//! driven through the phases of a run.
//!
//! ```text
//! Connect ─▶ Settle ─▶ Warmup ─▶ Measure ─▶ Drain ─▶ Close ─▶ Done
//!                  └─(idle)─▶ Hold ───────────────────▲
//! ```
//!
//! Every phase is bounded by its own timer and the whole run by a global
//! deadline, after which the loop stops and reports what it has.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::cli::{Config, Load};
use crate::client::{self, Client, Shared, State, When};
use crate::deflate::{self, CompressedFiller};
use crate::marker::{self, Marker};
use crate::procstat::{self, ProcSample};
use crate::report::{Latency, Report, Server};
use crate::rng::XorShift64;
use crate::tracker::{Seen, Tracker};

/// One read buffer shared by all clients.
const SCRATCH_LEN: usize = 256 * 1024;
/// Housekeeping interval: message timeouts and window refills.
const TICK_NS: u64 = 100_000_000;
/// How long clients get to finish the closing handshake.
const CLOSE_GRACE_NS: u64 = 2_000_000_000;
/// Open loop: a sender whose socket holds more unsent bytes skips turns.
const MAX_BACKLOG: usize = 4 << 20;
/// `--rate 0`: bytes one sender may send per loop pass before the loop
/// reads again, so that sending cannot starve the receivers.
const FLOOD_BYTES_PER_PASS: usize = 256 * 1024;
/// Open loop: a schedule this far behind is abandoned, not caught up.
const MAX_LAG_NS: u64 = 1_000_000_000;
/// Added to the sum of all phase limits to make the global deadline.
const DEADLINE_SLACK_NS: u64 = 3_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connect,
    Settle,
    Warmup,
    Measure,
    Drain,
    Hold,
    Close,
    Done,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub struct Runner {
    cfg: Config,
    poll: Poll,
    clients: Slab<Client>,
    shared: Shared,
    tracker: Tracker,
    start: Instant,
    phase: Phase,
    /// When the current phase began.
    phase_ns: u64,
    deadline_ns: u64,
    deadline_hit: bool,

    /// Clients created so far (including those that failed at once).
    created: usize,
    /// Clients connecting or handshaking.
    pending: usize,
    /// Clients in the open state: the recipients of the next message
    /// are all of them but the sender.
    open: usize,
    connected: u64,
    failed: u64,
    first_connect_error: Option<String>,
    last_open_ns: u64,
    connect_s: f64,
    /// When the last non-load text (join, leave, ...) arrived.
    last_chatter_ns: u64,
    disconnects: u64,
    /// Of those, the ones the server closed with a Close frame, by code.
    closes: BTreeMap<u16, u64>,

    /// Sender index to client token; `None` once the client is gone.
    sender_tokens: Vec<Option<usize>>,
    payload: Vec<u8>,
    /// What follows the marker in an uncompressed message.
    filler: Vec<u8>,
    /// `--deflate`: what follows the padded marker, compressed once.
    compressed_filler: CompressedFiller,
    /// `--deflate`: the padded marker of the message being built.
    head: Vec<u8>,
    /// Clients that got through the handshake with permessage-deflate.
    deflate_agreed: u64,
    /// `Shared::wire_in` when the measured window began, and the bytes
    /// received in it once it ended.
    wire_from: u64,
    wire_bytes: Option<u64>,
    ready: Vec<u32>,
    next_sender: usize,
    next_send_ns: u64,
    interval_ns: u64,
    next_tick_ns: u64,
    unsent: u64,

    server: Server,
    server_cpu_from: Option<f64>,
    tool_cpu_from: f64,
    tool_cpu_s: f64,
    open_at_sample: usize,
    window: (Option<u64>, Option<u64>),
}

impl Runner {
    pub fn new(cfg: Config) -> io::Result<Runner> {
        let limits = [
            ns(cfg.connect_timeout),
            ns(cfg.connect_timeout),
            ns(cfg.warmup),
            ns(cfg.duration),
            ns(cfg.drain),
            CLOSE_GRACE_NS,
            DEADLINE_SLACK_NS,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add);
        let before = procstat::sample_all(&cfg.server_pid);
        Ok(Runner {
            poll: Poll::new()?,
            clients: Slab::with_capacity(cfg.clients),
            shared: Shared::new(SCRATCH_LEN, XorShift64::from_entropy()),
            tracker: Tracker::new(cfg.senders),
            start: Instant::now(),
            phase: Phase::Connect,
            phase_ns: 0,
            deadline_ns: limits,
            deadline_hit: false,
            created: 0,
            pending: 0,
            open: 0,
            connected: 0,
            failed: 0,
            first_connect_error: None,
            last_open_ns: 0,
            connect_s: 0.0,
            last_chatter_ns: 0,
            disconnects: 0,
            closes: BTreeMap::new(),
            sender_tokens: vec![None; cfg.senders],
            payload: Vec::with_capacity(cfg.payload.max(marker::MAX_MARKER_LEN) + 64),
            filler: cfg.filler.bytes(cfg.payload),
            compressed_filler: CompressedFiller::new(
                cfg.filler
                    .bytes(cfg.payload.saturating_sub(marker::MAX_MARKER_LEN)),
            ),
            head: Vec::with_capacity(marker::MAX_MARKER_LEN),
            deflate_agreed: 0,
            wire_from: 0,
            wire_bytes: None,
            ready: Vec::new(),
            next_sender: 0,
            next_send_ns: 0,
            interval_ns: 1,
            next_tick_ns: 0,
            unsent: 0,
            server: Server {
                rss_kib_before: before.map(|s| s.rss_kib),
                rss_kib_peak: before.map(|s| s.peak_rss_kib),
                ..Server::default()
            },
            server_cpu_from: before.map(|s| s.cpu_s),
            tool_cpu_from: procstat::own_cpu_s(),
            tool_cpu_s: 0.0,
            open_at_sample: 0,
            window: (None, None),
            cfg,
        })
    }

    fn now(&self) -> u64 {
        ns(self.start.elapsed())
    }

    fn progress(&self, message: std::fmt::Arguments<'_>) {
        if !self.cfg.quiet {
            eprintln!("[{:8.3}] {message}", secs(self.now()));
        }
    }

    /// Samples the server, keeping the highest peak seen (so a server gone
    /// by the end of the run still has one).
    fn server_sample(&mut self) -> Option<ProcSample> {
        let sample = procstat::sample_all(&self.cfg.server_pid)?;
        let peak = &mut self.server.rss_kib_peak;
        *peak = Some(peak.map_or(sample.peak_rss_kib, |p| p.max(sample.peak_rss_kib)));
        Some(sample)
    }

    pub fn run(mut self) -> io::Result<Report> {
        let mut events = Events::with_capacity(1024);
        self.progress(format_args!(
            "connecting {} clients to {} ({} at a time)",
            self.cfg.clients, self.cfg.url, self.cfg.connect_concurrency
        ));
        while self.phase != Phase::Done {
            let now = self.now();
            if now >= self.deadline_ns {
                self.deadline_hit = true;
                self.progress(format_args!("global deadline reached in {:?}", self.phase));
                break;
            }
            self.advance(now);
            let refused = self.shared.errors.deflate_refused;
            if refused > 0 && self.phase != Phase::Connect {
                return Err(io::Error::other(format!(
                    "--deflate: the server answered {refused} of {} handshakes without \
                     permessage-deflate",
                    self.cfg.clients
                )));
            }
            if self.phase == Phase::Connect {
                self.open_connections();
            }
            if matches!(self.phase, Phase::Warmup | Phase::Measure) {
                self.send(now);
            }
            let timeout = self.timeout(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.on_event(event);
            }
        }
        Ok(self.report())
    }

    /// Moves through as many phases as are due at `now`.
    fn advance(&mut self, now: u64) {
        loop {
            let phase = self.phase;
            self.step(now);
            if self.phase == phase {
                return;
            }
        }
    }

    fn enter(&mut self, phase: Phase, now: u64) {
        self.phase = phase;
        self.phase_ns = now;
    }

    fn step(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.phase_ns);
        match self.phase {
            Phase::Connect => {
                let all_tried = self.created == self.cfg.clients && self.pending == 0;
                if all_tried || elapsed >= ns(self.cfg.connect_timeout) {
                    self.finish_connect(now);
                    self.enter(Phase::Settle, now);
                }
            }
            Phase::Settle => {
                let quiet_for = now.saturating_sub(self.last_chatter_ns.max(self.phase_ns));
                if quiet_for >= ns(self.cfg.settle) || elapsed >= ns(self.cfg.connect_timeout) {
                    self.settled(now);
                }
            }
            Phase::Warmup => {
                if elapsed >= ns(self.cfg.warmup) {
                    self.start_window(now);
                    self.enter(Phase::Measure, now);
                }
            }
            Phase::Measure => {
                if elapsed >= ns(self.cfg.duration) {
                    self.end_window(now);
                    self.progress(format_args!(
                        "draining {} messages still in flight",
                        self.tracker.incomplete()
                    ));
                    self.enter(Phase::Drain, now);
                }
            }
            Phase::Drain => {
                if self.tracker.incomplete() == 0 || elapsed >= ns(self.cfg.drain) {
                    self.close_all(now);
                }
            }
            Phase::Hold => {
                if elapsed >= ns(self.cfg.duration) {
                    self.window.1 = Some(now);
                    self.server.rss_kib_end = self.server_sample().map(|s| s.rss_kib);
                    self.close_all(now);
                }
            }
            Phase::Close => {
                if self.clients.is_empty() || elapsed >= CLOSE_GRACE_NS {
                    self.enter(Phase::Done, now);
                }
            }
            Phase::Done => {}
        }
    }

    /// When the current phase may end on its own (its timer).
    fn phase_end_ns(&self) -> u64 {
        let limit = match self.phase {
            Phase::Connect => ns(self.cfg.connect_timeout),
            Phase::Settle => {
                let quiet_from = self.last_chatter_ns.max(self.phase_ns);
                let quiet_end = quiet_from.saturating_add(ns(self.cfg.settle));
                return quiet_end.min(self.phase_ns.saturating_add(ns(self.cfg.connect_timeout)));
            }
            Phase::Warmup => ns(self.cfg.warmup),
            Phase::Measure | Phase::Hold => ns(self.cfg.duration),
            Phase::Drain => ns(self.cfg.drain),
            Phase::Close => CLOSE_GRACE_NS,
            Phase::Done => 0,
        };
        self.phase_ns.saturating_add(limit)
    }

    fn timeout(&self, now: u64) -> Duration {
        let mut wake = self.phase_end_ns().min(self.deadline_ns).min(now + TICK_NS);
        if matches!(self.phase, Phase::Warmup | Phase::Measure) {
            match self.cfg.load {
                Load::Rate(_) => wake = wake.min(self.next_send_ns),
                Load::Flood if (0..self.cfg.senders as u32).any(|s| self.can_flood(s)) => {
                    wake = now;
                }
                _ => {}
            }
        }
        Duration::from_nanos(wake.saturating_sub(now))
    }

    fn open_connections(&mut self) {
        while self.created < self.cfg.clients && self.pending < self.cfg.connect_concurrency {
            let index = self.created;
            self.created += 1;
            let ips = &self.cfg.source_ips;
            let source = (!ips.is_empty()).then(|| ips[index % ips.len()]);
            let sender = (index < self.cfg.senders).then_some(index as u32);
            let token = self.clients.vacant_key();
            let registered =
                client::connect(&self.cfg.targets[index % self.cfg.targets.len()], source)
                    .and_then(|mut stream| {
                        self.poll.registry().register(
                            &mut stream,
                            Token(token),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        Ok(stream)
                    });
            match registered {
                Ok(stream) => {
                    let target = index % self.cfg.targets.len();
                    self.clients.insert(Client::new(stream, sender, target));
                    if let Some(s) = sender {
                        self.sender_tokens[s as usize] = Some(token);
                    }
                    self.pending += 1;
                }
                Err(e) => {
                    self.failed += 1;
                    self.shared.errors.connect += 1;
                    if self.first_connect_error.is_none() {
                        self.progress(format_args!("connect failed: {e}"));
                        self.first_connect_error = Some(e.to_string());
                    }
                }
            }
        }
    }

    fn finish_connect(&mut self, now: u64) {
        let stragglers: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.state().is_pending())
            .map(|(token, _)| token)
            .collect();
        for token in stragglers {
            self.shared.errors.connect += 1;
            self.close_one(token);
        }
        // Clients never created count as failed too.
        self.failed += (self.cfg.clients - self.created) as u64;
        let end = if self.connected > 0 {
            self.last_open_ns
        } else {
            now
        };
        self.connect_s = secs(end.saturating_sub(self.phase_ns));
        self.progress(format_args!(
            "connected {}/{} in {:.3} s ({:.0} handshakes/s), {} failed; settling",
            self.connected,
            self.cfg.clients,
            self.connect_s,
            if self.connect_s > 0.0 {
                self.connected as f64 / self.connect_s
            } else {
                0.0
            },
            self.failed
        ));
        if let Some(detail) = self.shared.errors.first_detail.take() {
            self.progress(format_args!("first handshake error: {detail}"));
        }
        if self.cfg.targets[0].deflate {
            self.progress(format_args!(
                "permessage-deflate agreed on {} of {} connections",
                self.deflate_agreed, self.connected
            ));
        }
    }

    /// Joins have stopped: sample the server, then hold or start sending.
    fn settled(&mut self, now: u64) {
        let sample = self.server_sample();
        self.server.rss_kib_after = sample.map(|s| s.rss_kib);
        self.open_at_sample = self.open;
        self.progress(format_args!(
            "settled: {} open, {} joins seen",
            self.open, self.tracker.counts.joins
        ));
        if self.cfg.load == Load::Idle {
            self.server.cpu_s = sample
                .zip(self.server_cpu_from)
                .map(|(s, from)| s.cpu_s - from);
            self.tool_cpu_s = procstat::own_cpu_s() - self.tool_cpu_from;
            self.window = (Some(now), None);
            self.progress(format_args!("holding {} connections", self.open));
            self.enter(Phase::Hold, now);
            return;
        }
        match self.cfg.load {
            Load::Rate(rate) => {
                self.interval_ns = ((1e9 / rate) as u64).max(1);
                self.next_send_ns = now;
            }
            Load::Window(_) => self.ready.extend(0..self.cfg.senders as u32),
            Load::Flood | Load::Idle => {}
        }
        self.next_tick_ns = now + TICK_NS;
        self.progress(format_args!("warming up for {:?}", self.cfg.warmup));
        self.enter(Phase::Warmup, now);
    }

    fn start_window(&mut self, now: u64) {
        self.server_cpu_from = self.server_sample().map(|s| s.cpu_s);
        self.tool_cpu_from = procstat::own_cpu_s();
        self.tracker.start_window(now);
        self.wire_from = self.shared.wire_in;
        self.window.0 = Some(now);
        self.progress(format_args!("measuring for {:?}", self.cfg.duration));
    }

    fn end_window(&mut self, now: u64) {
        let sample = self.server_sample();
        self.server.cpu_s = sample
            .zip(self.server_cpu_from)
            .map(|(s, from)| s.cpu_s - from);
        self.server.rss_kib_end = sample.map(|s| s.rss_kib);
        self.tool_cpu_s = procstat::own_cpu_s() - self.tool_cpu_from;
        self.tracker.end_window(now);
        self.wire_bytes = Some(self.shared.wire_in - self.wire_from);
        self.window.1 = Some(now);
    }

    fn close_all(&mut self, now: u64) {
        self.progress(format_args!("closing {} connections", self.clients.len()));
        self.enter(Phase::Close, now);
        let tokens: Vec<usize> = self.clients.iter().map(|(token, _)| token).collect();
        for token in tokens {
            self.close_one(token);
        }
    }

    fn close_one(&mut self, token: usize) {
        if let Some(client) = self.clients.get_mut(token) {
            let before = client.state();
            client.close(&mut self.shared);
            self.settle_state(token, before);
        }
    }

    fn on_event(&mut self, event: &Event) {
        let token = event.token().0;
        let Runner {
            clients,
            tracker,
            shared,
            cfg,
            start,
            last_chatter_ns,
            ..
        } = self;
        let Some(client) = clients.get_mut(token) else {
            return;
        };
        let before = client.state();
        // One clock reading per readiness event, not per message: the
        // messages of one event arrived in the same few reads, and the
        // clock was a sixth of the tool's time at millions a second. A
        // latency is then early by at most the reads of one event (the
        // read loop ends at the first short read).
        let mut received_ns = None;
        let target = &cfg.targets[client.target];
        client.handle(event, target, shared, &mut |text| {
            let now = *received_ns.get_or_insert_with(|| ns(start.elapsed()));
            if tracker.on_message(text, now) != Seen::Delivery {
                *last_chatter_ns = now;
            }
        });
        self.settle_state(token, before);
    }

    /// Updates the counts after a client moved from `before` to its
    /// current state, and removes it if it is finished.
    fn settle_state(&mut self, token: usize, before: State) {
        let Some(client) = self.clients.get(token) else {
            return;
        };
        let after = client.state();
        if before == after {
            return;
        }
        let server_close = client.server_close();
        if before.is_pending() && !after.is_pending() {
            self.pending -= 1;
            if after.is_established() {
                self.connected += 1;
                if client.agreed().is_some() {
                    self.deflate_agreed += 1;
                }
                self.last_open_ns = self.now();
            } else {
                self.failed += 1;
            }
        }
        if before == State::Open {
            self.open -= 1;
            if self.phase != Phase::Close {
                self.disconnects += 1;
                if let Some(code) = server_close {
                    *self.closes.entry(code).or_default() += 1;
                }
            }
        } else if after == State::Open {
            self.open += 1;
        }
        if after == State::Dead {
            let client = self.clients.remove(token);
            if let Some(s) = client.sender {
                self.sender_tokens[s as usize] = None;
            }
        }
    }

    fn send(&mut self, now: u64) {
        if now >= self.next_tick_ns {
            self.next_tick_ns = now + TICK_NS;
            self.tracker.expire(now, ns(self.cfg.msg_timeout));
            if let Load::Window(_) = self.cfg.load {
                self.ready.extend(0..self.cfg.senders as u32);
            }
        }
        match self.cfg.load {
            Load::Rate(_) => {
                if now > self.next_send_ns + MAX_LAG_NS {
                    let behind = (now - self.next_send_ns) / self.interval_ns;
                    self.unsent += behind;
                    self.next_send_ns += behind * self.interval_ns;
                }
                while self.next_send_ns <= now {
                    let sender = self.next_sender as u32;
                    self.next_sender = (self.next_sender + 1) % self.cfg.senders;
                    self.next_send_ns += self.interval_ns;
                    if !self.send_one(sender, MAX_BACKLOG, When::Now) {
                        self.unsent += 1;
                    }
                }
            }
            Load::Window(window) => {
                let mut ready = std::mem::take(&mut self.ready);
                self.tracker.take_ready(&mut ready);
                ready.sort_unstable();
                ready.dedup();
                // What a sender may send now goes out in one write: one
                // system call (and one segment for the server to read)
                // instead of one per message, so the tool's own cost stays
                // off the server's figures.
                for &sender in &ready {
                    while self.tracker.outstanding(sender) < window
                        && self.send_one(sender, usize::MAX, When::Later)
                    {}
                    self.send_queued(sender);
                }
                ready.clear();
                self.ready = ready;
            }
            Load::Flood => {
                // Each sender sends while its socket takes whole messages,
                // up to a budget per pass; one that is full waits for its
                // WRITABLE event (the flush in `Client::handle`).
                let per_pass = FLOOD_BYTES_PER_PASS.div_ceil(self.cfg.payload.max(1));
                for sender in 0..self.cfg.senders as u32 {
                    for _ in 0..per_pass {
                        if !self.send_one(sender, 0, When::Now) {
                            break;
                        }
                    }
                }
            }
            Load::Idle => {}
        }
    }

    /// Whether `sender` could send under `--rate 0`: open, with nothing
    /// left unwritten.
    fn can_flood(&self, sender: u32) -> bool {
        self.sender_tokens[sender as usize]
            .and_then(|token| self.clients.get(token))
            .is_some_and(|c| c.state() == State::Open && c.backlog() == 0)
            && self.open >= 2
    }

    /// Writes what `sender` queued with `When::Later`.
    fn send_queued(&mut self, sender: u32) {
        let Some(token) = self.sender_tokens[sender as usize] else {
            return;
        };
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        if client.state() != State::Open {
            return;
        }
        client.send_queued(&mut self.shared);
        if client.state() != State::Open {
            self.settle_state(token, State::Open);
        }
    }

    /// Sends the next message of `sender` (`write`: at once, or with its
    /// others of this pass) unless more than `max_backlog` bytes are still
    /// waiting for its socket; false if it could not.
    fn send_one(&mut self, sender: u32, max_backlog: usize, write: When) -> bool {
        let Some(token) = self.sender_tokens[sender as usize] else {
            return false;
        };
        if self.open < 2 {
            return false;
        }
        let Some(client) = self.clients.get_mut(token) else {
            return false;
        };
        if client.state() != State::Open || client.backlog() > max_backlog {
            return false;
        }
        let sent_ns = ns(self.start.elapsed());
        let marker = Marker {
            sender,
            seq: self.tracker.next_seq(sender),
            sent_ns,
        };
        match client.agreed() {
            Some(agreed) => {
                marker::write_padded_marker(&mut self.head, marker);
                let filler = self.compressed_filler.for_bits(agreed.client_window_bits());
                deflate::write_compressed(&mut self.payload, &self.head, filler);
                client.send_compressed_text(&self.payload, &mut self.shared, write);
            }
            None => {
                marker::write_with_filler(
                    &mut self.payload,
                    marker,
                    self.cfg.payload,
                    &self.filler,
                );
                client.send_text(&self.payload, &mut self.shared, write);
            }
        }
        if client.state() != State::Open {
            self.settle_state(token, State::Open);
            return false;
        }
        self.tracker
            .on_sent(sender, sent_ns, (self.open - 1) as u32);
        true
    }

    fn report(mut self) -> Report {
        let now = self.now();
        if self.phase == Phase::Measure {
            self.end_window(now);
        }
        if self.phase == Phase::Connect {
            self.finish_connect(now);
        }
        // The peak so far (VmHWM covers the closing too).
        self.server_sample();
        let measure_ns = match self.window {
            (Some(from), Some(until)) => until - from,
            (Some(from), None) => now - from,
            _ => 0,
        };
        let hist = &self.tracker.latency;
        let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1e3);
        let latency = Latency {
            samples: hist.count(),
            min_us: us(hist.min()),
            p50_us: us(hist.percentile(50.0)),
            p99_us: us(hist.percentile(99.0)),
            p999_us: us(hist.percentile(99.9)),
            max_us: us(hist.max()),
            mean_us: hist.mean().map(|ns| ns / 1e3),
        };
        let mode = match self.cfg.load {
            Load::Idle => format!("idle, {} connections", self.cfg.clients),
            Load::Rate(rate) => format!("open loop, {rate} msg/s total"),
            Load::Flood => "open loop, as fast as the sockets take them".to_string(),
            Load::Window(w) => format!("closed loop, window {w} per sender"),
        };
        Report {
            label: self.cfg.label.clone(),
            url: self.cfg.url.clone(),
            mode,
            idle: self.cfg.load == Load::Idle,
            clients: self.cfg.clients,
            connected: self.connected,
            open_at_sample: self.open_at_sample,
            senders: self.cfg.senders,
            payload: self.cfg.payload,
            connect_failures: self.failed,
            connect_s: self.connect_s,
            measure_s: secs(measure_ns),
            counts: self.tracker.counts,
            lost: self.tracker.missing(),
            disconnects: self.disconnects,
            closes: self.closes.iter().map(|(&code, &n)| (code, n)).collect(),
            unsent: self.unsent,
            errors: std::mem::take(&mut self.shared.errors),
            latency,
            server: (!self.cfg.server_pid.is_empty()).then(|| std::mem::take(&mut self.server)),
            tool_cpu_s: self.tool_cpu_s,
            cpu_window_s: if self.cfg.load == Load::Idle {
                secs(self.window.0.unwrap_or(now))
            } else {
                secs(measure_ns)
            },
            tool_cpu_total_s: procstat::own_cpu_s(),
            deadline_hit: self.deadline_hit,
            tls: self.cfg.targets[0].tls.is_some(),
            deflate: self.cfg.targets[0].deflate,
            deflate_agreed: self.deflate_agreed,
            wire_bytes: self.wire_bytes,
            inflated: self.shared.inflate.inflated,
            inflate_cache_hits: self.shared.inflate.cached,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A whole run against the real wschat server (the library's loop on
    //! a thread of the test, real loopback sockets, real TLS and deflate).

    use std::net::SocketAddrV4;
    use std::path::{Path, PathBuf};

    use clap::Parser;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    use wschat::chat::Chat;
    use wschat::net::server::{Server, ServerConfig};
    use wschat::net::tls::TlsIdentity;

    use super::*;
    use crate::cli::Args;

    /// A test CA, and a certificate for 127.0.0.1 it signed, as PEM files
    /// (ca, cert, key) in a fresh folder.
    fn pki() -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("wschat-load-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let paths = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    /// Starts wschat serving wss only, with `--compression`, on a thread
    /// (it runs until the test process ends); its address.
    fn start_wschat(cert: &Path, key: &Path) -> SocketAddrV4 {
        let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
        let (tx, rx) = std::sync::mpsc::channel();
        // The server is built on its thread: it is not Send (Rc inside).
        std::thread::spawn(move || {
            let config = wschat::config::Config::try_parse_from([
                "wschat",
                "--listen",
                "none",
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--compression",
                "--max-message-rate",
                "0",
            ])
            .unwrap();
            let identity = TlsIdentity::load(&cert, &key).unwrap();
            let server_config = ServerConfig {
                listen: None,
                tls: Some((config.tls_listen.unwrap(), identity)),
                settings: config.settings(),
                timing: config.timing(),
                flood: config.flood(),
                max_connections: 1000,
                max_connections_per_ip: config.max_connections_per_ip,
                reuse_port: false,
                splice_min_size: config.splice_min_size,
            };
            let mut server =
                Server::bind(server_config, Chat::new(config.chat().unwrap())).unwrap();
            tx.send(server.local_addrs().unwrap()).unwrap();
            server.run()
        });
        match rx.recv().unwrap()[..] {
            [std::net::SocketAddr::V4(addr)] => addr,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closed_loop_over_wss_with_deflate_against_wschat() {
        let (ca, cert, key) = pki();
        let addr = start_wschat(&cert, &key);
        let url = format!("wss://{addr}/");
        let args = Args::try_parse_from([
            "wschat-load",
            "--url",
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--deflate",
            "--filler",
            "chat",
            "-c",
            "5",
            "-s",
            "2",
            "--window",
            "2",
            "--payload",
            "1024",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--settle",
            "0.2",
            "--quiet",
        ])
        .unwrap();
        let report = Runner::new(args.into_config().unwrap())
            .unwrap()
            .run()
            .unwrap();
        assert_eq!((report.connected, report.deflate_agreed), (5, 5));
        assert!(report.counts.delivered_measured > 0, "messages went round");
        assert_eq!((report.lost, report.errors.protocol), (0, 0));
        assert!(report.tls && report.deflate);
        // 1 KiB of chat text arrives compressed: well under its size on
        // the wire, TLS records and frame headers included.
        let per = report.wire_bytes_per_delivery().unwrap();
        assert!(per < 800.0, "{per} wire bytes per 1,024-byte message");
        assert!(report.inflated > 0);
        let _ = std::fs::remove_dir_all(ca.parent().unwrap());
    }
}
