//! How many chat messages one redis-server sequences, stores and
//! publishes per second through the publish script (`EVALSHA` of
//! `wschat::cluster::PUBLISH_SCRIPT`), pipelined over one command link,
//! with subscriber links (one per node) receiving every message.
//!
//! ```sh
//! cargo run --release --example redis_publish_rate -- [SECONDS] [WINDOW] [SUBSCRIBERS] [PAYLOAD] [ROOMS] [BATCH]
//! # defaults: 5 s, 256 calls in flight, 3 subscribers, 64-byte messages, 1 room,
//! # 1 message per call (BATCH 64: as a busy node sends them, one call per room and pass)
//! ```
//!
//! It starts its own redis-server on a free loopback port (nothing saved
//! to disk), so it needs Debian's `redis-server`. It prints publishes/s,
//! messages delivered to the subscribers per second, and redis-server's
//! CPU time per publish (from /proc). Measured, not a test.

#[path = "../tests/redis/mod.rs"]
mod redis;

use std::time::{Duration, Instant};

use redis::{Net, RedisServer};
use wschat::cluster::link::{Event, Link, LinkConfig, Role};
use wschat::cluster::{parse_batch, url, PublishCall, RoomKeys, PUBLISH_SCRIPT};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().map(|v| v.parse::<f64>().unwrap_or(0.0)).sum()
    });
    // SAFETY: sysconf reads a constant of the system and has no
    // preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn main() {
    let seconds = arg(1, 5);
    let window = arg(2, 256);
    let subscribers = arg(3, 3);
    let payload_len = arg(4, 64);
    let rooms = arg(5, 1).max(1);
    let batch = arg(6, 1).clamp(1, 4096);
    let server = RedisServer::start(&[]);
    let pid = server.pid().expect("running");
    let url = url::parse(&format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let now = Instant::now();
    let mut net: Net<u64> = Net::new();
    let cmd = net.add(
        Link::new(LinkConfig::new(&url, Role::Commands), 1, now),
        server.addr(),
    );
    let keys: Vec<RoomKeys> = (0..rooms)
        .map(|r| RoomKeys::new(&format!("room{r}")))
        .collect();
    let mut subs = Vec::new();
    for s in 0..subscribers {
        let i = net.add(
            Link::new(LinkConfig::new(&url, Role::Subscriber), 100 + s, now),
            server.addr(),
        );
        for k in &keys {
            net.link(i).subscribe(now, k.events.as_bytes()).unwrap();
        }
        subs.push(i);
    }
    let mut confirmed = 0;
    let want = subscribers * rooms;
    if want > 0 {
        net.run_until(Duration::from_secs(10), |_, e| {
            confirmed += u64::from(matches!(e, Event::Subscribed(_)));
            confirmed == want
        });
    }
    if !net.link(cmd).is_ready() {
        net.run_until(Duration::from_secs(10), |i, e| {
            i == cmd && *e == Event::Ready
        });
    }
    net.link(cmd)
        .send(
            Instant::now(),
            0,
            &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()],
        )
        .unwrap();
    net.run_until(Duration::from_secs(10), |_, e| {
        matches!(e, Event::Reply { tag: 0, .. })
    });

    let message = vec![b'x'; usize::try_from(payload_len).unwrap()];
    let messages: Vec<&[u8]> = (0..batch).map(|_| message.as_slice()).collect();
    let calls: Vec<PublishCall> = keys
        .iter()
        .map(|k| PublishCall::new(k, &messages, 1000, b"bench-1"))
        .collect();
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let end = start + warmup + Duration::from_secs(seconds);
    let (mut sent, mut in_flight) = (0u64, 0u64);
    let (mut replies, mut errors, mut delivered) = (0u64, 0u64, 0u64);
    let mut measured: Option<(Instant, u64, u64, f64)> = None;
    let mut events = Vec::new();
    while Instant::now() < end {
        while in_flight < window {
            let call = &calls[usize::try_from(sent % rooms).unwrap()];
            match net
                .link(cmd)
                .send(Instant::now(), sent + 1, &call.evalsha())
            {
                Ok(()) => {
                    sent += 1;
                    in_flight += 1;
                }
                Err(_) => break,
            }
        }
        net.step(Duration::from_millis(5), &mut events);
        for (_, event) in events.drain(..) {
            match event {
                Event::Reply { reply, .. } => {
                    in_flight -= 1;
                    replies += 1;
                    errors += u64::from(reply.as_error().is_some());
                }
                Event::Message { payload, .. } => {
                    delivered += parse_batch(&payload).map_or(0, |b| b.messages.len() as u64);
                }
                Event::Disconnected { reason, .. } => panic!("link lost: {reason}"),
                _ => {}
            }
        }
        if measured.is_none() && Instant::now() >= start + warmup {
            measured = Some((Instant::now(), replies, delivered, cpu_seconds(pid)));
        }
    }
    let (t0, r0, d0, c0) = measured.expect("ran past the warm-up");
    let elapsed = t0.elapsed().as_secs_f64();
    let publishes = (replies - r0) as f64;
    let published = publishes * batch as f64;
    let cpu = cpu_seconds(pid) - c0;
    println!(
        "redis_publish_rate: {seconds} s, window {window}, {subscribers} subscribers, \
         {payload_len}-byte messages, {rooms} rooms, {batch} messages per call, redis-server {}",
        redis_version()
    );
    println!("script calls/s: {:.0}", publishes / elapsed);
    println!("messages published/s: {:.0}", published / elapsed);
    println!(
        "messages delivered to subscribers/s: {:.0}",
        (delivered - d0) as f64 / elapsed
    );
    println!(
        "redis-server CPU: {:.2} s in {:.2} s ({:.0}% of a core), {:.2} us per message",
        cpu,
        elapsed,
        100.0 * cpu / elapsed,
        1e6 * cpu / published.max(1.0)
    );
    println!("script errors: {errors}");
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
