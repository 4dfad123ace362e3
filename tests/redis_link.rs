//! The Redis link (`wschat::cluster::link`) against a real redis-server:
//! login, pipelining, the publish script, pub/sub between two links, and
//! a server killed and restarted under a subscriber.
//!
//! Each test starts its own `redis-server` on a free loopback port with
//! nothing saved to disk, and drives the links over real sockets in a
//! small `mio` loop (tests/redis/mod.rs). They are ignored by plain
//! `cargo test` because they need Debian's `redis-server`; run with
//! `--include-ignored` (as scripts/test.sh does), where a missing
//! redis-server fails them.

mod redis;

use std::time::Duration;

use redis::{Net, RedisServer};
use wschat::cluster::link::{Disconnect, Event, Link, LinkConfig, LinkState, Role, BACKOFF_BASE};
use wschat::cluster::resp::Reply;
use wschat::cluster::{
    parse_batch, parse_event, url, Batch, PublishCall, RoomKeys, PUBLISH_SCRIPT,
    PUBLISH_SCRIPT_SHA1,
};

const WAIT: Duration = Duration::from_secs(10);

fn link<T>(url_text: &str, role: Role, seed: u64) -> Link<T> {
    let url = url::parse(url_text).expect("a valid URL");
    Link::new(LinkConfig::new(&url, role), seed, std::time::Instant::now())
}

fn bulk(b: &[u8]) -> Reply {
    Reply::Bulk(Some(b.to_vec()))
}

/// Sends one command on link `i` and runs until its reply.
fn call(net: &mut Net<u32>, i: usize, tag: u32, args: &[&[u8]]) -> Reply {
    net.link(i)
        .send(std::time::Instant::now(), tag, args)
        .expect("queued");
    let seen = net.run_until(WAIT, |j, e| {
        j == i && matches!(e, Event::Reply { tag: t, .. } if *t == tag)
    });
    match seen
        .into_iter()
        .rev()
        .find(|(j, e)| *j == i && matches!(e, Event::Reply { tag: t, .. } if *t == tag))
    {
        Some((_, Event::Reply { reply, .. })) => reply,
        other => panic!("{other:?}"),
    }
}

fn wait_ready<T: std::fmt::Debug + PartialEq>(net: &mut Net<T>, i: usize) {
    net.run_until(WAIT, |j, e| j == i && *e == Event::Ready);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn logs_in_pipelines_and_runs_the_publish_script() {
    let server = RedisServer::start(&["--requirepass", "s@cret"]);
    let mut net: Net<u32> = Net::new();
    // The password percent-encoded, the database selected.
    let url = format!("redis://default:s%40cret@127.0.0.1:{}/2", server.port);
    let c = net.add(link(&url, Role::Commands, 1), server.addr());
    wait_ready(&mut net, c);
    assert_eq!(net.link(c).state(), LinkState::Ready);

    // Pipelined: all queued before any reply, answered in order.
    let now = std::time::Instant::now();
    let l = net.link(c);
    l.send(now, 1, &[b"SET", b"k", b"v"]).unwrap();
    l.send(now, 2, &[b"GET", b"k"]).unwrap();
    l.send(now, 3, &[b"INCR", b"n"]).unwrap();
    l.send(now, 4, &[b"INCR", b"n"]).unwrap();
    l.send(now, 5, &[b"GET", b"missing"]).unwrap();
    l.send(now, 6, &[b"CLIENT", b"INFO"]).unwrap();
    assert_eq!(l.pending(), 6);
    let seen = net.run_until(WAIT, |_, e| matches!(e, Event::Reply { tag: 6, .. }));
    let replies: Vec<(u32, Reply)> = seen
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Reply { tag, reply } => Some((tag, reply)),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies[..5],
        [
            (1, Reply::Simple(b"OK".to_vec())),
            (2, bulk(b"v")),
            (3, Reply::Integer(1)),
            (4, Reply::Integer(2)),
            (5, Reply::Bulk(None)),
        ]
    );
    let info = String::from_utf8_lossy(replies[5].1.as_bytes().unwrap()).into_owned();
    assert!(info.contains(" db=2 "), "SELECT 2 took: {info}");

    // The script: EVALSHA before it is loaded is NOSCRIPT; SCRIPT LOAD
    // returns the SHA-1 the crate encodes; then EVALSHA runs it.
    let keys = RoomKeys::new("lobby");
    let first = PublishCall::new(&keys, &[b"hello"], 100, b"n1-1");
    assert!(call(&mut net, c, 10, &first.evalsha()).is_error_code("NOSCRIPT"));
    let sha = call(
        &mut net,
        c,
        11,
        &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()],
    );
    assert_eq!(sha, bulk(PUBLISH_SCRIPT_SHA1.as_bytes()));
    let sequenced =
        |seq: i64, epoch: &[u8]| Reply::Array(Some(vec![Reply::Integer(seq), bulk(epoch)]));
    assert_eq!(
        call(&mut net, c, 12, &first.evalsha()),
        sequenced(1, b"n1-1")
    );
    // The epoch stays the room's, whoever publishes next.
    let second = PublishCall::new(&keys, &[b"world"], 100, b"n2-9");
    assert_eq!(
        call(&mut net, c, 13, &second.evalsha()),
        sequenced(2, b"n1-1")
    );
    let history = call(
        &mut net,
        c,
        14,
        &[b"XRANGE", keys.history.as_bytes(), b"-", b"+"],
    );
    let entry = |id: &[u8], m: &[u8]| {
        Reply::Array(Some(vec![
            bulk(id),
            Reply::Array(Some(vec![bulk(b"m"), bulk(m)])),
        ]))
    };
    assert_eq!(
        history,
        Reply::Array(Some(vec![entry(b"1-0", b"hello"), entry(b"2-0", b"world")]))
    );
    // Resuming after 1: exactly what came later.
    let since = call(
        &mut net,
        c,
        15,
        &[b"XRANGE", keys.history.as_bytes(), b"(1-0", b"+"],
    );
    assert_eq!(since, Reply::Array(Some(vec![entry(b"2-0", b"world")])));

    // The script cache flushed (as after a Redis restart): NOSCRIPT, then
    // EVAL runs it and caches it again.
    assert_eq!(
        call(&mut net, c, 16, &[b"SCRIPT", b"FLUSH"]),
        Reply::Simple(b"OK".to_vec())
    );
    assert!(call(&mut net, c, 17, &second.evalsha()).is_error_code("NOSCRIPT"));
    assert_eq!(call(&mut net, c, 18, &second.eval()), sequenced(3, b"n1-1"));
    assert_eq!(
        call(&mut net, c, 19, &second.evalsha()),
        sequenced(4, b"n1-1")
    );

    // Redis lost the room's numbering: it starts over in a new epoch and
    // the stale history goes.
    call(&mut net, c, 20, &[b"DEL", keys.seq.as_bytes()]);
    assert_eq!(
        call(&mut net, c, 21, &second.evalsha()),
        sequenced(1, b"n2-9")
    );
    let history = call(
        &mut net,
        c,
        22,
        &[b"XRANGE", keys.history.as_bytes(), b"-", b"+"],
    );
    assert_eq!(history, Reply::Array(Some(vec![entry(b"1-0", b"world")])));
    // MAXLEN bounds the stream (approximately: `~` trims whole nodes).
    // A batch of three takes three numbers, each its own stream entry.
    let three = PublishCall::new(&keys, &[b"a", b"b", b"c"], 100, b"n3-1");
    assert_eq!(
        call(&mut net, c, 24, &three.evalsha()),
        sequenced(2, b"n2-9")
    );
    let since = call(
        &mut net,
        c,
        25,
        &[b"XRANGE", keys.history.as_bytes(), b"(2-0", b"+"],
    );
    assert_eq!(
        since,
        Reply::Array(Some(vec![entry(b"3-0", b"b"), entry(b"4-0", b"c")]))
    );
    assert_eq!(
        call(&mut net, c, 26, &[b"GET", keys.seq.as_bytes()]),
        bulk(b"4")
    );
    // No message: refused, nothing numbered.
    let none = PublishCall::new(&keys, &[], 100, b"n3-1");
    assert!(call(&mut net, c, 27, &none.evalsha()).as_error().is_some());
    assert_eq!(
        call(&mut net, c, 28, &[b"GET", keys.seq.as_bytes()]),
        bulk(b"4")
    );
    let small = PublishCall::new(&keys, &[b"x"], 10, b"n2-9");
    for i in 0..300 {
        net.link(c)
            .send(std::time::Instant::now(), 100 + i, &small.evalsha())
            .unwrap();
    }
    net.run_until(WAIT, |_, e| matches!(e, Event::Reply { tag: 399, .. }));
    let len = call(&mut net, c, 23, &[b"XLEN", keys.history.as_bytes()]);
    assert!(len.as_integer().unwrap() < 200, "{len:?}");

    // A wrong password: refused, said, retried with backoff.
    let bad = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let b = net.add(link(&bad, Role::Commands, 2), server.addr());
    let seen = net.run_until(WAIT, |j, e| {
        j == b && matches!(e, Event::Disconnected { .. })
    });
    let Some((
        _,
        Event::Disconnected {
            reason: Disconnect::Auth(text),
            retry_in,
        },
    )) = seen.last()
    else {
        panic!("{seen:?}");
    };
    assert!(text.starts_with("WRONGPASS"), "{text}");
    assert!(*retry_in <= BACKOFF_BASE);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn subscriber_gets_what_another_link_publishes() {
    let server = RedisServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let mut net: Net<u32> = Net::new();
    let sub = net.add(link(&url, Role::Subscriber, 1), server.addr());
    let cmd = net.add(link(&url, Role::Commands, 2), server.addr());
    let lobby = RoomKeys::new("lobby");
    let rust = RoomKeys::new("rust");
    let now = std::time::Instant::now();
    net.link(sub)
        .subscribe(now, lobby.events.as_bytes())
        .unwrap();
    net.link(sub)
        .subscribe(now, rust.events.as_bytes())
        .unwrap();
    let mut confirmed = 0;
    net.run_until(WAIT, |_, e| {
        confirmed += usize::from(matches!(e, Event::Subscribed(_)));
        confirmed == 2
    });
    assert!(net.link(sub).is_subscribed(lobby.events.as_bytes()));
    wait_ready_or_already(&mut net, cmd);

    call(
        &mut net,
        cmd,
        1,
        &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()],
    );
    let messages: [&[u8]; 3] = [b"{\"text\":\"hi all\"}", b"", b"line\nfeed"];
    let publish = PublishCall::new(&lobby, &messages, 100, b"n1-5");
    // The reply and the message may come in either order: run until the
    // message, keeping everything.
    net.link(cmd)
        .send(std::time::Instant::now(), 2, &publish.evalsha())
        .unwrap();
    let seen = net.run_until(WAIT, |j, e| j == sub && matches!(e, Event::Message { .. }));
    let Some((_, Event::Message { channel, payload })) = seen
        .iter()
        .find(|(_, e)| matches!(e, Event::Message { .. }))
    else {
        panic!("{seen:?}");
    };
    assert_eq!(channel, lobby.events.as_bytes());
    // One push for the batch, numbered from 1.
    assert_eq!(
        parse_batch(payload),
        Some(Batch {
            first: 1,
            epoch: b"n1-5",
            messages: messages.to_vec(),
        })
    );

    // Unsubscribed from rust: its messages stop; lobby's go on.
    net.link(sub)
        .unsubscribe(std::time::Instant::now(), rust.events.as_bytes())
        .unwrap();
    net.run_until(WAIT, |_, e| matches!(e, Event::Unsubscribed(_)));
    let now = std::time::Instant::now();
    net.link(cmd)
        .send(now, 3, &[b"PUBLISH", rust.events.as_bytes(), b"0 - gone"])
        .unwrap();
    net.link(cmd)
        .send(
            now,
            4,
            &[b"PUBLISH", lobby.events.as_bytes(), b"0 - still here"],
        )
        .unwrap();
    let (mut message, mut replied) = (false, false);
    let seen = net.run_until(WAIT, |j, e| {
        message |= j == sub && matches!(e, Event::Message { .. });
        replied |= matches!(e, Event::Reply { tag: 4, .. });
        message && replied
    });
    // Redis delivered the rust message to no one (0 receivers).
    assert!(seen.contains(&(
        cmd,
        Event::Reply {
            tag: 3,
            reply: Reply::Integer(0)
        }
    )));
    let messages: Vec<_> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Message { payload, .. } => Some(payload.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, [b"0 - still here".as_slice()]);
    assert_eq!(
        parse_event(messages[0]),
        Some((0, &b"-"[..], &b"still here"[..]))
    );
}

fn wait_ready_or_already(net: &mut Net<u32>, i: usize) {
    if !net.link(i).is_ready() {
        wait_ready(net, i);
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn reconnects_and_resubscribes_after_redis_restarts() {
    let mut server = RedisServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let mut net: Net<u32> = Net::new();
    let sub = net.add(link(&url, Role::Subscriber, 11), server.addr());
    let cmd = net.add(link(&url, Role::Commands, 12), server.addr());
    let room = RoomKeys::new("lobby");
    net.link(sub)
        .subscribe(std::time::Instant::now(), room.events.as_bytes())
        .unwrap();
    net.run_until(WAIT, |_, e| matches!(e, Event::Subscribed(_)));
    wait_ready_or_already(&mut net, cmd);
    assert_eq!(
        call(&mut net, cmd, 1, &[b"PING"]),
        Reply::Simple(b"PONG".to_vec())
    );

    // Killed with a command queued: both links see it end, the command
    // comes back as failed, and new commands are refused while down.
    net.link(cmd)
        .send(std::time::Instant::now(), 2, &[b"PING"])
        .unwrap();
    server.kill();
    let mut down = 0;
    let seen = net.run_until(WAIT, |_, e| {
        down += usize::from(matches!(e, Event::Disconnected { .. }));
        down == 2
    });
    for i in [sub, cmd] {
        let first = seen
            .iter()
            .find_map(|(j, e)| match e {
                Event::Disconnected { reason, retry_in } if *j == i => {
                    Some((reason.clone(), *retry_in))
                }
                _ => None,
            })
            .unwrap();
        assert!(
            matches!(first.0, Disconnect::Eof | Disconnect::Io(_)),
            "link {i}: {first:?}"
        );
        assert!(
            first.1 >= BACKOFF_BASE / 2 && first.1 <= BACKOFF_BASE,
            "{first:?}"
        );
    }
    // The command in flight: written to a dead socket or never answered.
    let seen = if seen.iter().any(|(_, e)| *e == Event::Failed { tag: 2 }) {
        seen
    } else {
        net.run_until(WAIT, |_, e| *e == Event::Failed { tag: 2 })
    };
    assert!(seen.iter().any(|(_, e)| *e == Event::Failed { tag: 2 }));
    assert_eq!(
        net.link(cmd).send(std::time::Instant::now(), 3, &[b"PING"]),
        Err(wschat::cluster::link::SendError::NotReady)
    );

    // While it is down, retries are refused and back off: the second
    // delay's step is twice the first's.
    let mut refused = Vec::new();
    net.run_until(WAIT, |j, e| {
        if let Event::Disconnected {
            reason: Disconnect::Io(_),
            retry_in,
        } = e
        {
            if j == sub {
                refused.push(*retry_in);
            }
        }
        refused.len() == 2
    });
    assert!(
        refused[0] >= BACKOFF_BASE && refused[0] <= BACKOFF_BASE * 2,
        "{refused:?}"
    );
    assert!(
        refused[1] >= BACKOFF_BASE * 2 && refused[1] <= BACKOFF_BASE * 4,
        "{refused:?}"
    );

    // Back on the same port: both links reconnect, the subscriber
    // subscribes again by itself, and messages flow.
    server.restart();
    let mut back = (false, false);
    net.run_until(Duration::from_secs(30), |j, e| {
        if j == sub && matches!(e, Event::Subscribed(_)) {
            back.0 = true;
        }
        if j == cmd && *e == Event::Ready {
            back.1 = true;
        }
        back == (true, true)
    });
    assert!(net.link(sub).is_subscribed(room.events.as_bytes()));
    net.link(cmd)
        .send(
            std::time::Instant::now(),
            4,
            &[b"PUBLISH", room.events.as_bytes(), b"0 - after"],
        )
        .unwrap();
    let seen = net.run_until(WAIT, |j, e| j == sub && matches!(e, Event::Message { .. }));
    assert!(matches!(
        seen.iter().find(|(_, e)| matches!(e, Event::Message { .. })),
        Some((_, Event::Message { payload, .. })) if payload == b"0 - after"
    ));
    let stats = net.link(sub).stats();
    assert_eq!(stats.ready, 2, "{stats:?}");
    assert!(stats.connects >= 4 && stats.disconnects >= 3, "{stats:?}");
    assert_eq!(net.link(cmd).stats().failed, 1);
}

/// The room directory's two scripts (what `/rooms` reads across nodes):
/// entries summed per room over the nodes whose entries live, the
/// busiest first within the limit, expired ones (a dead node's) gone.
#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn the_room_directory_sums_live_nodes_and_forgets_expired_ones() {
    use wschat::cluster::redis_bus::{DIRECTORY_SCRIPT, ROOMS_SCRIPT};
    use wschat::cluster::{DIRECTORY_COUNTS, DIRECTORY_ROOMS};
    let server = RedisServer::start(&[]);
    let mut net: Net<u32> = Net::new();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let c = net.add(link(&url, Role::Commands, 1), server.addr());
    wait_ready(&mut net, c);
    let keys: [&[u8]; 5] = [
        b"EVAL",
        DIRECTORY_SCRIPT.as_bytes(),
        b"2",
        DIRECTORY_ROOMS.as_bytes(),
        DIRECTORY_COUNTS.as_bytes(),
    ];
    let refresh = |net: &mut Net<u32>, tag, args: &[&[u8]]| {
        let mut all = keys.to_vec();
        all.extend_from_slice(args);
        assert_eq!(call(net, c, tag, &all), Reply::Integer(1));
    };
    refresh(&mut net, 1, &[b"60000", b"n1", b"a", b"2", b"b", b"1"]);
    refresh(&mut net, 2, &[b"60000", b"n2", b"a", b"3", b"c", b"1"]);
    // n3's entry expires at once: a node that died.
    refresh(&mut net, 3, &[b"1", b"n3", b"d", b"9"]);
    std::thread::sleep(Duration::from_millis(20));
    let list = |net: &mut Net<u32>, tag, most: &[u8], read: &[u8]| {
        let args: [&[u8]; 7] = [
            b"EVAL",
            ROOMS_SCRIPT.as_bytes(),
            b"2",
            DIRECTORY_ROOMS.as_bytes(),
            DIRECTORY_COUNTS.as_bytes(),
            most,
            read,
        ];
        call(net, c, tag, &args)
    };
    let int = Reply::Integer;
    assert_eq!(
        list(&mut net, 4, b"2", b"100"),
        Reply::Array(Some(vec![
            int(3),
            int(1),
            bulk(b"a"),
            int(5),
            bulk(b"b"),
            int(1)
        ]))
    );
    // More live entries than read: said, the total a lower bound.
    let Reply::Array(Some(cut)) = list(&mut net, 5, b"10", b"2") else {
        panic!("not an array");
    };
    assert_eq!(cut[1], int(0));
    // A node that left a room takes its entry away; the next refresh
    // swept the dead node's.
    refresh(&mut net, 6, &[b"60000", b"n1", b"a", b"0"]);
    assert_eq!(
        list(&mut net, 7, b"10", b"100"),
        Reply::Array(Some(vec![
            int(3),
            int(1),
            bulk(b"a"),
            int(3),
            bulk(b"b"),
            int(1),
            bulk(b"c"),
            int(1)
        ]))
    );
    let dead = call(
        &mut net,
        c,
        8,
        &[b"HEXISTS", DIRECTORY_COUNTS.as_bytes(), b"d\x1fn3"],
    );
    assert_eq!(dead, int(0));
    let ttl = call(&mut net, c, 9, &[b"PTTL", DIRECTORY_ROOMS.as_bytes()]);
    assert!(matches!(ttl, Reply::Integer(ms) if ms > 0), "{ttl:?}");
}
