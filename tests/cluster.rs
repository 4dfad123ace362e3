//! Many nodes, one chat: real `wschat` nodes joined through a real
//! `redis-server` (a free loopback port, nothing saved to disk), with
//! tungstenite clients on every node.
//!
//! Ignored by plain `cargo test` because they need Debian's
//! `redis-server`; run with `--include-ignored` (as scripts/test.sh does),
//! where a missing redis-server fails them. A node without `--redis` is
//! covered by every other test file, unchanged.

mod common;
mod redis;

use std::time::{Duration, Instant};

use common::{Client, Server};
use redis::RedisServer;

/// How long a wait for the cluster may take (reconnects back off).
const WAIT: Duration = Duration::from_secs(20);

fn node(redis: &RedisServer, id: &str, extra: &[&str]) -> Server {
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut args = vec!["--redis", url.as_str(), "--node-id", id];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Nodes `n1`, `n2` and `n3` on `redis`, their links up.
fn three_nodes(redis: &RedisServer) -> Vec<Server> {
    let nodes: Vec<Server> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(redis, id, &[]))
        .collect();
    nodes.iter().for_each(wait_up);
    nodes
}

/// A lobby user on each of the three nodes, each having heard the later
/// ones join (so what they read next is what the test does).
fn one_user_each(nodes: &[Server]) -> [Client; 3] {
    let mut a = join(&nodes[0]);
    let mut b = join(&nodes[1]);
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n2")));
    let c = join(&nodes[2]);
    let c_joined = format!("{} joined", qualified(&c, "n3"));
    assert_eq!(a.next_text(), c_joined);
    assert_eq!(b.next_text(), c_joined);
    [a, b, c]
}

/// Nodes `n1` and `n2` on `redis`, their links up, with lobby users `a`
/// and `a2` on n1 and `b` on n2, each having heard the later ones join;
/// returned as `[a, b, a2]`.
fn two_nodes_three_users(redis: &RedisServer) -> ([Server; 2], [Client; 3]) {
    let n1 = node(redis, "n1", &[]);
    let n2 = node(redis, "n2", &[]);
    wait_up(&n1);
    wait_up(&n2);
    let mut a = join(&n1);
    let mut b = join(&n2);
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n2")));
    let a2 = n1.client();
    let a2_joined = format!("{} joined", qualified(&a2, "n1"));
    assert_eq!(a.next_text(), a2_joined);
    assert_eq!(b.next_text(), a2_joined);
    ([n1, n2], [a, b, a2])
}

/// Nodes `n1` and `n2` on `redis` (with `extra` flags), their links up,
/// and a JSON client in `/rust` on each, its node hearing the room.
fn two_nodes_json_in_rust(redis: &RedisServer, extra: &[&str]) -> ([Server; 2], [Client; 2]) {
    let n1 = node(redis, "n1", extra);
    let n2 = node(redis, "n2", extra);
    wait_up(&n1);
    wait_up(&n2);
    let a = Client::json(n1.addr, "/rust");
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    let b = Client::json(n2.addr, "/rust");
    wait_metric(&n2, "wschat_redis_rooms_heard", 1.0);
    ([n1, n2], [a, b])
}

/// Waits until `series` on `server`'s /metrics is `want`.
fn wait_metric(server: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = server.metrics().value(series);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {got:?}, not {want}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the node's two Redis links are up.
fn wait_up(server: &Server) {
    wait_metric(server, "wschat_redis_up", 1.0);
}

/// A plain client of `server` in the lobby, once its node hears the
/// lobby's events.
fn join(server: &Server) -> Client {
    let client = server.client();
    wait_metric(server, "wschat_redis_rooms_heard", 1.0);
    client
}

fn qualified(client: &Client, node: &str) -> String {
    format!("User {}@{node}", client.port)
}

/// The next text `client` gets within `limit`, skipping none.
fn next_text_within(client: &mut Client, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        match client.silent_for(Duration::from_millis(200)) {
            Ok(()) => assert!(
                Instant::now() < deadline,
                "client {}: nothing within {limit:?}",
                client.port
            ),
            Err(tungstenite::Message::Text(text)) => return text.to_string(),
            Err(other) => panic!("client {}: {other:?}", client.port),
        }
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_message_on_one_node_reaches_every_other_node_once() {
    let redis = RedisServer::start(&[]);
    let nodes = three_nodes(&redis);

    let [mut a, mut b, mut c] = one_user_each(&nodes);

    a.send_text("hello from n1");
    let from_a = format!("{}: hello from n1", qualified(&a, "n1"));
    assert_eq!(b.next_text(), from_a);
    assert_eq!(c.next_text(), from_a);

    // Exactly once, and not back to its sender: the next thing each
    // hears is the next message.
    c.send_text("and from n3");
    let from_c = format!("{}: and from n3", qualified(&c, "n3"));
    assert_eq!(a.next_text(), from_c);
    assert_eq!(b.next_text(), from_c);
    b.send_text("n2 here");
    let from_b = format!("{}: n2 here", qualified(&b, "n2"));
    assert_eq!(a.next_text(), from_b);
    assert_eq!(c.next_text(), from_b);

    // A second user on n1 hears n1's own messages once too, after the
    // room's history, which holds every node's messages in their order.
    let mut a2 = nodes[0].client();
    for said in [&from_a, &from_c, &from_b] {
        assert_eq!(&a2.next_text(), said);
    }
    let a2_joined = format!("{} joined", qualified(&a2, "n1"));
    assert_eq!(a.next_text(), a2_joined);
    assert_eq!(b.next_text(), a2_joined);
    assert_eq!(c.next_text(), a2_joined);
    a.send_text("twice?");
    let twice = format!("{}: twice?", qualified(&a, "n1"));
    for other in [&mut a2, &mut b, &mut c] {
        assert_eq!(other.next_text(), twice);
    }
    a2.send_text("once");
    let once = format!("{}: once", qualified(&a2, "n1"));
    for other in [&mut a, &mut b, &mut c] {
        assert_eq!(other.next_text(), once);
    }

    // Nick changes, /me and binary cross nodes too.
    b.send_text("/nick bob");
    let nick = format!("{} is now bob", qualified(&b, "n2"));
    for other in [&mut a, &mut a2, &mut c] {
        assert_eq!(other.next_text(), nick);
    }
    assert_eq!(b.next_text(), nick);
    b.send_text("/me waves");
    for other in [&mut a, &mut a2, &mut c] {
        assert_eq!(other.next_text(), "* bob waves");
    }
    c.send_binary(&[0, 1, 2, 255]);
    for other in [&mut a, &mut a2, &mut b] {
        assert_eq!(other.next_binary(), [0, 1, 2, 255]);
    }

    // Leaves are told on every node.
    c.close(1000);
    let c_left = format!("{} left", qualified(&c, "n3"));
    for other in [&mut a, &mut a2, &mut b] {
        assert_eq!(other.next_text(), c_left);
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn json_clients_see_one_numbering_across_nodes() {
    let redis = RedisServer::start(&[]);
    let (_nodes, [mut a, mut b]) = two_nodes_json_in_rust(&redis, &[]);
    let mut seqs = Vec::new();
    for i in 0..6 {
        let (sender, name) = if i % 2 == 0 {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        sender.send_text(&format!(r#"{{"type":"message","text":"{name} {i}"}}"#));
        let got_a = a.next_json_of("message");
        let got_b = b.next_json_of("message");
        assert_eq!(got_a, got_b, "both nodes deliver the same event");
        assert_eq!(got_a["text"], format!("{name} {i}"));
        seqs.push(got_a["seq"].as_u64().expect("a seq"));
    }
    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
}

/// Writes `n` JSON messages `NAME I` in one go (one TCP write), so the
/// node reads them in one pass.
fn burst(client: &mut Client, name: &str, n: usize) {
    for i in 0..n {
        let text = format!(r#"{{"type":"message","text":"{name} {i}"}}"#);
        client
            .ws
            .write(tungstenite::Message::text(text))
            .expect("buffered");
    }
    client.ws.flush().expect("written");
}

/// Bursts on two nodes at once go to Redis in batches (one script call
/// per room and pass, far fewer than messages): every node still shows
/// every message once, numbered 1, 2, 3, ... in one order, each sender's
/// in the order sent.
#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn bursts_on_two_nodes_are_batched_in_one_numbering() {
    const N: usize = 150;
    let redis = RedisServer::start(&[]);
    let ([n1, n2], [mut a, mut b]) = two_nodes_json_in_rust(&redis, &["--max-message-rate", "0"]);
    burst(&mut a, "a", N);
    burst(&mut b, "b", N);
    let heard = |c: &mut Client| -> Vec<(u64, String)> {
        (0..2 * N)
            .map(|_| {
                let m = c.next_json_of("message");
                let seq = m["seq"].as_u64().expect("a seq");
                (seq, m["text"].as_str().expect("a text").to_owned())
            })
            .collect()
    };
    let on_a = heard(&mut a);
    let on_b = heard(&mut b);
    assert_eq!(on_a, on_b, "one order on both nodes");
    let seqs: Vec<u64> = on_a.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=2 * N as u64).collect::<Vec<u64>>());
    for name in ["a", "b"] {
        let texts: Vec<&str> = on_a
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| t.starts_with(name))
            .collect();
        let sent: Vec<String> = (0..N).map(|i| format!("{name} {i}")).collect();
        assert_eq!(texts, sent, "{name}'s in the order sent");
    }
    for n in [&n1, &n2] {
        let m = n.metrics();
        let calls = m.value("wschat_redis_publish_calls").expect("calls");
        assert!(calls >= 1.0 && calls < N as f64, "{calls} calls for {N}");
        // And the joins, not sequenced.
        let published = m.value("wschat_redis_published").expect("published");
        assert!(published >= N as f64, "{published}");
        let received = m.value("wschat_redis_received").expect("received");
        assert!(received >= 2.0 * N as f64, "{received}");
        assert_eq!(m.value("wschat_redis_malformed"), Some(0.0));
        assert_eq!(m.value("wschat_redis_lost"), Some(0.0));
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn redis_killed_and_restarted_mid_chat() {
    let mut redis = RedisServer::start(&[]);
    let ([n1, n2], [mut a, mut b, mut a2]) = two_nodes_three_users(&redis);
    a.send_text("before");
    let before = format!("{}: before", qualified(&a, "n1"));
    assert_eq!(b.next_text(), before);
    assert_eq!(a2.next_text(), before);

    redis.kill();
    let out_of_reach = "wschat: other nodes are out of reach: messages here reach this node only, and are not kept in the shared history";
    for client in [&mut a, &mut a2, &mut b] {
        assert_eq!(next_text_within(client, WAIT), out_of_reach);
    }
    let (_, health) = n1.get("/healthz");
    assert!(health.starts_with("degraded: "), "{health}");

    // Local chat goes on.
    a.send_text("still here");
    assert_eq!(
        a2.next_text(),
        format!("{}: still here", qualified(&a, "n1"))
    );
    // Told once: nothing more for b meanwhile.
    assert!(b.silent_for(Duration::from_millis(300)).is_ok());

    redis.restart();
    let back = "wschat: other nodes are back in reach: chat spans every node again (what they said meanwhile is not shown here)";
    for client in [&mut a, &mut a2, &mut b] {
        assert_eq!(next_text_within(client, WAIT), back);
    }
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    wait_metric(&n2, "wschat_redis_rooms_heard", 1.0);
    let (_, health) = n1.get("/healthz");
    assert_eq!(health.trim(), "ok");

    // Chat across nodes resumes. This Redis kept nothing: the room's
    // first message since has a new epoch, and every node says so once.
    a.send_text("across again");
    let lost = "wschat: this room's shared history was lost (Redis restarted without it): numbering starts over";
    let across = format!("{}: across again", qualified(&a, "n1"));
    assert_eq!(a.next_text(), lost);
    for client in [&mut b, &mut a2] {
        assert_eq!(client.next_text(), lost);
        assert_eq!(client.next_text(), across);
    }
    b.send_text("heard");
    assert_eq!(a.next_text(), format!("{}: heard", qualified(&b, "n2")));
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn redis_unreachable_at_start_is_a_degraded_start() {
    let mut redis = RedisServer::start(&[]);
    let port = redis.port;
    redis.kill();
    let url = format!("redis://127.0.0.1:{port}");
    let n1 = Server::start(&["--redis", &url, "--node-id", "n1"]);
    let (_, health) = n1.get("/healthz");
    assert!(health.starts_with("degraded: "), "{health}");
    // Local chat works meanwhile.
    let mut a = n1.client();
    let mut b = n1.client();
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n1")));
    b.send_text("alone");
    assert_eq!(a.next_text(), format!("{}: alone", qualified(&b, "n1")));
    redis.restart();
    wait_up(&n1);
    let (_, health) = n1.get("/healthz");
    assert_eq!(health.trim(), "ok");
}

#[test]
fn a_bad_node_id_or_redis_url_is_refused_at_start() {
    for (flag, value) in [("--node-id", "no spaces"), ("--redis", "http://x")] {
        let mut args = vec!["--listen", "127.0.0.1:0", flag, value];
        if flag == "--node-id" {
            args.extend(["--redis", "redis://127.0.0.1:1"]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(&args)
            .output()
            .expect("run wschat");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn history_and_since_come_from_redis_on_any_node() {
    let redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    let n2 = node(&redis, "n2", &[]);
    wait_up(&n1);
    wait_up(&n2);
    let mut a = Client::connect_path(n1.addr, "/rust", None);
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    let said: Vec<String> = (1..=3)
        .map(|i| {
            a.send_text(&format!("m{i}"));
            format!("{}: m{i}", qualified(&a, "n1"))
        })
        .collect();
    // A JSON client on n1 sees the numbering; once m3 is there, the
    // three are in Redis.
    let mut probe = Client::json(n1.addr, "/rust");
    // (live, or replayed as history if it came back before the probe).
    loop {
        let event = probe.next_json();
        if matches!(event["type"].as_str(), Some("message" | "history"))
            && event["seq"].as_u64() == Some(3)
        {
            break;
        }
    }

    // n2 never had anyone in the room: its newcomer's history, and a
    // resume with since, come from Redis.
    let mut b = Client::connect_path(n2.addr, "/rust", None);
    for line in &said {
        assert_eq!(&b.next_text(), line);
    }
    let mut c = Client::connect_path(n2.addr, "/rust?since=1", None);
    assert_eq!(c.next_text(), said[1]);
    assert_eq!(c.next_text(), said[2]);
    // Then live traffic, once.
    a.send_text("m4");
    let m4 = format!("{}: m4", qualified(&a, "n1"));
    assert_eq!(b.next_text(), format!("{} joined", qualified(&c, "n2")));
    assert_eq!(b.next_text(), m4);
    assert_eq!(c.next_text(), m4);

    // Every node restarted: the history is still Redis'.
    drop((a, b, c, probe));
    drop((n1, n2));
    let n3 = node(&redis, "n3", &[]);
    wait_up(&n3);
    let mut d = Client::connect_path(n3.addr, "/rust", None);
    for line in said.iter().chain([&m4]) {
        assert_eq!(&d.next_text(), line);
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn reuse_port_lets_nodes_share_one_port() {
    let redis = RedisServer::start(&[]);
    // A free port for both (the one moment it could be taken is between
    // here and the first node's bind).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let start = |id: &str| {
        Server::start_raw(&[
            "--listen",
            &listen,
            "--reuse-port",
            "--redis",
            &url,
            "--node-id",
            id,
        ])
    };
    let (n1, n2) = (start("n1"), start("n2"));
    assert_eq!((n1.port(), n2.port()), (port, port));
    wait_up(&n1);
    wait_up(&n2);
    // Without it the port is taken.
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
        .args(["--listen", &listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run wschat");
    let status = refused.wait().expect("exit");
    assert!(!status.success());
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn who_lists_every_node_and_a_killed_node_s_users_leave() {
    let redis = RedisServer::start(&[]);
    let nodes = three_nodes(&redis);
    let mut a = Client::connect_path(nodes[0].addr, "/p", None);
    wait_metric(&nodes[0], "wschat_redis_rooms_heard", 1.0);
    let mut b = Client::connect_path(nodes[1].addr, "/p", None);
    wait_metric(&nodes[1], "wschat_redis_rooms_heard", 1.0);
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n2")));
    let c = Client::connect_path(nodes[2].addr, "/p", None);
    let c_joined = format!("{} joined", qualified(&c, "n3"));
    assert_eq!(a.next_text(), c_joined);
    assert_eq!(b.next_text(), c_joined);

    a.send_text("/who");
    let (qa, qb, qc) = (
        qualified(&a, "n1"),
        qualified(&b, "n2"),
        qualified(&c, "n3"),
    );
    assert_eq!(
        a.next_text(),
        format!("wschat: Users in p (3): {qa}, {qb}, {qc}")
    );
    b.send_text("/who");
    assert_eq!(
        b.next_text(),
        format!("wschat: Users in p (3): {qb}, {qa}, {qc}")
    );

    // n3 dies without a word: its user leaves everywhere once its presence
    // entry expires (6 s) and the others' listings stop showing it.
    nodes[2].signal(libc::SIGKILL);
    let c_left = format!("{qc} left");
    let within = Duration::from_secs(30);
    assert_eq!(next_text_within(&mut a, within), c_left);
    assert_eq!(next_text_within(&mut b, within), c_left);
    a.send_text("/who");
    assert_eq!(a.next_text(), format!("wschat: Users in p (2): {qa}, {qb}"));
    drop(c);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_nickname_is_unique_across_nodes_under_a_race() {
    let redis = RedisServer::start(&[]);
    let nodes = three_nodes(&redis);
    let [mut a, mut b, mut c] = one_user_each(&nodes);

    a.send_text("/nick bob");
    b.send_text("/nick Bob");
    let (qa, qb) = (qualified(&a, "n1"), qualified(&b, "n2"));
    let told = c.next_text();
    let (winner, loser) = if told == format!("{qa} is now bob") {
        (&mut a, &mut b)
    } else {
        assert_eq!(told, format!("{qb} is now Bob"), "one of them won");
        (&mut b, &mut a)
    };
    assert!(
        c.silent_for(Duration::from_millis(500)).is_ok(),
        "only one won"
    );
    assert_eq!(winner.next_text(), told);
    // The winner's change and the refusal race on two connections.
    let mut heard = [loser.next_text(), loser.next_text()];
    heard.sort_by_key(|line| line.starts_with("error: "));
    assert_eq!(heard[0], told, "{heard:?}");
    assert!(
        heard[1].starts_with("error: the name ") && heard[1].contains("is taken in this room"),
        "{heard:?}"
    );

    // Once the holder is gone, the name is free on every node.
    winner.close(1000);
    let _ = next_text_within(loser, WAIT); // the leave
    loser.send_text("/nick bob");
    let took = next_text_within(loser, WAIT);
    assert!(took.ends_with(" is now bob"), "{took}");
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_verified_name_is_claimed_on_every_node() {
    let redis = RedisServer::start(&[]);
    let nodes = two_verifying_nodes(&redis);
    let mut other = join(&nodes[1]);
    let token = common::jwt::for_user("alice", 60, SECRET.as_bytes());
    let alice = Client::connect_path(
        nodes[0].addr,
        &format!("/?token={token}"),
        Some("wschat.v1.json"),
    );
    assert_eq!(next_text_within(&mut other, WAIT), "alice joined");
    // Her claim went to Redis with her join; a user on the other node
    // cannot take her name (nor a look-alike of it).
    let deadline = Instant::now() + WAIT;
    loop {
        other.send_text("/nick Alice");
        let answer = next_text_within(&mut other, WAIT);
        if answer.starts_with("error: the name Alice is taken in this room, by ") {
            assert!(answer.contains("on another node"), "{answer}");
            break;
        }
        // Answered before her claim landed: give the name back and retry.
        assert!(answer.ends_with("is now Alice"), "{answer}");
        assert!(Instant::now() < deadline, "her claim never landed");
        other.send_text(&format!("/nick other{}", other.port));
        let _ = next_text_within(&mut other, WAIT);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(alice);
}

/// Two nodes `n1` and `n2` that verify users with `SECRET`, links up.
fn two_verifying_nodes(redis: &RedisServer) -> Vec<Server> {
    let secret = common::tls::file_with("cluster-secret", SECRET);
    let args = ["--auth-secret-file", secret.to_str().unwrap()];
    let nodes: Vec<Server> = ["n1", "n2"]
        .iter()
        .map(|id| node(redis, id, &args))
        .collect();
    nodes.iter().for_each(wait_up);
    nodes
}

const SECRET: &str = "the cluster test's secret, thirty-two bytes or more";

/// `/who` of `client` until its answer contains `want` (a listing of
/// other nodes' members comes with the heartbeat).
fn who_until(client: &mut Client, want: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        client.send_text("/who");
        let who = next_text_within(client, WAIT);
        if who.contains(want) {
            return who;
        }
        assert!(Instant::now() < deadline, "{want:?} never in {who:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_verified_user_on_one_node_is_shown_verified_on_another() {
    let redis = RedisServer::start(&[]);
    let nodes = two_verifying_nodes(&redis);
    // alice is verified on n1 before anyone is in the room on n2: n2
    // learns of her from the presence listing.
    let token = common::jwt::for_user("alice", 60, SECRET.as_bytes());
    let mut alice = Client::json(nodes[0].addr, &format!("/?token={token}"));
    assert_eq!(alice.next_json_of("system")["you"], "alice");
    wait_metric(&nodes[0], "wschat_redis_rooms_heard", 1.0);
    let mut plain = join(&nodes[1]);
    let who = who_until(&mut plain, "alice");
    assert!(who.contains("alice (verified)"), "{who}");
    // A JSON newcomer on n2 has her in its welcome's verified list.
    let mut json = Client::json(nodes[1].addr, "/");
    let welcome = json.next_json_of("system");
    assert_eq!(
        welcome["verified"],
        serde_json::json!(["alice"]),
        "{welcome}"
    );
    assert_eq!(
        next_text_within(&mut plain, WAIT),
        format!("User {}@n2 joined", json.port)
    );
    json.send_text(r#"{"type":"who"}"#);
    assert_eq!(
        json.next_json_of("system")["verified"],
        serde_json::json!(["alice"])
    );
    // Her messages are marked verified on n2.
    alice.send_text(r#"{"type":"message","text":"it is me"}"#);
    let seen = json.next_json_of("message");
    assert_eq!(
        (&seen["from"], &seen["verified"]),
        (&"alice".into(), &true.into()),
        "{seen}"
    );
    assert_eq!(next_text_within(&mut plain, WAIT), "alice: it is me");

    // carol is verified on n1 while n2 has users: her join event says so.
    let token = common::jwt::for_user("carol", 60, SECRET.as_bytes());
    let carol = Client::json(nodes[0].addr, &format!("/?token={token}"));
    assert_eq!(next_text_within(&mut plain, WAIT), "carol joined");
    plain.send_text("/who");
    let who = next_text_within(&mut plain, WAIT);
    assert!(
        who.contains("alice (verified)") && who.contains("carol (verified)"),
        "{who}"
    );
    assert!(
        who.contains(&format!("User {}@n2,", json.port))
            || who.ends_with(&format!("User {}@n2", json.port)),
        "anonymous users unmarked: {who}"
    );
    drop((alice, carol));
}

/// `redis-cli` (Debian's redis-server depends on it) against `redis`.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let port = redis.port.to_string();
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("redis-cli (package redis-tools) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_verified_user_takes_its_name_from_a_holder_on_another_node() {
    let redis = RedisServer::start(&[]);
    let nodes = two_verifying_nodes(&redis);
    let mut watcher = join(&nodes[0]);
    let mut holder = join(&nodes[1]);
    let (qw, qh) = (qualified(&watcher, "n1"), qualified(&holder, "n2"));
    assert_eq!(watcher.next_text(), format!("{qh} joined"));
    // The anonymous holder takes a look-alike of the name first (its
    // case-folded key `aiice` is its own, the skeleton `alice` shared).
    holder.send_text("/nick aIice");
    let took = format!("{qh} is now aIice");
    assert_eq!(next_text_within(&mut holder, WAIT), took);
    assert_eq!(next_text_within(&mut watcher, WAIT), took);
    let nicks = redis_cli(&redis, &["HGETALL", "wschat:{lobby}:nicks"]);
    assert!(nicks.contains("n2\u{1f}aIice"), "{nicks:?}");

    let token = common::jwt::for_user("alice", 60, SECRET.as_bytes());
    let mut alice = Client::json(nodes[0].addr, &format!("/?token={token}"));
    assert_eq!(alice.next_json_of("system")["you"], "alice");
    // The holder is told as on one node, and every node sees the rename.
    let mut heard = [
        next_text_within(&mut holder, WAIT),
        next_text_within(&mut holder, WAIT),
        next_text_within(&mut holder, WAIT),
    ];
    heard.sort();
    let renamed = format!("aIice is now {qh}");
    assert_eq!(
        heard,
        [
            renamed.clone(),
            "alice joined".to_owned(),
            format!(
                "wschat: the name alice belongs to a verified user who just arrived: you are {qh}"
            ),
        ],
        "{heard:?}"
    );
    let mut seen = [
        next_text_within(&mut watcher, WAIT),
        next_text_within(&mut watcher, WAIT),
    ];
    seen.sort();
    assert_eq!(seen, [renamed.clone(), "alice joined".to_owned()]);
    let change = alice.next_json_of("nick");
    assert_eq!(
        (&change["from"], &change["text"]),
        (&"aIice".into(), &qh.as_str().into()),
        "{change}"
    );

    // The displaced claim is gone: every key left is alice's, on n1.
    let nicks = redis_cli(&redis, &["HGETALL", "wschat:{lobby}:nicks"]);
    assert!(!nicks.contains("n2"), "{nicks:?}");
    assert!(nicks.contains("n1\u{1f}alice"), "{nicks:?}");
    watcher.send_text("/who");
    let who = next_text_within(&mut watcher, WAIT);
    assert_eq!(
        who,
        format!("wschat: Users in lobby (3): {qw}, alice (verified), {qh}")
    );
    holder.send_text("/nick alice");
    let refused = next_text_within(&mut holder, WAIT);
    assert!(
        refused.starts_with("error: the name alice is taken"),
        "{refused}"
    );

    // A holder on the verified user's own node is renamed there at once,
    // and the other nodes see that rename too.
    watcher.send_text("/nick bob");
    let took = format!("{qw} is now bob");
    assert_eq!(next_text_within(&mut holder, WAIT), took);
    assert_eq!(next_text_within(&mut watcher, WAIT), took);
    let token = common::jwt::for_user("bob", 60, SECRET.as_bytes());
    let bob = Client::json(nodes[0].addr, &format!("/?token={token}"));
    assert_eq!(
        next_text_within(&mut holder, WAIT),
        format!("bob is now {qw}")
    );
    assert_eq!(next_text_within(&mut holder, WAIT), "bob joined");
    drop((alice, bob));
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn an_api_post_on_one_node_reaches_users_on_another() {
    const KEY: &str = "the cluster test's API key";
    let key = common::tls::file_with("cluster-api-key", KEY);
    let mut redis = RedisServer::start(&[]);
    let poster = node(&redis, "n1", &["--api-key-file", key.to_str().unwrap()]);
    let other = node(&redis, "n2", &[]);
    [&poster, &other].into_iter().for_each(wait_up);
    let mut user = join(&other);
    let mut json = Client::json(other.addr, "/");
    json.next_json_of("system");
    assert_eq!(
        next_text_within(&mut user, WAIT),
        format!("User {}@n2 joined", json.port)
    );
    wait_metric(&poster, "wschat_redis_up", 1.0);
    let request = |text: &str| {
        let body = format!(r#"{{"from":"deploy","text":"{text}"}}"#);
        format!(
            "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            poster.addr,
            body.len()
        )
    };
    let post = |text: &str| common::http_exchange(poster.addr, request(text).as_bytes());
    // The answer waits for Redis' number: the one the room sees.
    for text in ["v2 is out", "v3 is out"] {
        let (head, answer) = post(text);
        assert_eq!(head.status, 201, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            next_text_within(&mut user, WAIT),
            format!("deploy (bot): {text}")
        );
        let seen = json.next_json_of("message");
        assert_eq!(seen["text"], text);
        assert_eq!(
            answer,
            serde_json::json!({"room": "lobby", "seq": seen["seq"]}),
            "{seen}"
        );
    }

    // Redis stalled (stopped, the links not yet timed out): no number
    // within the API's 5 s, and the answer says so.
    let pid = libc::pid_t::try_from(redis.pid().expect("running")).unwrap();
    // SAFETY: kill(2) has no memory effects; the pid is this test's own
    // redis-server child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut stream = std::net::TcpStream::connect(poster.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut stream, request("stalled").as_bytes()).unwrap();
    let (head, answer) = common::read_response_to_eof(&mut stream);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(head.status, 504, "{answer}");
    assert!(
        answer.contains("Redis did not number the message within 5 s"),
        "{answer}"
    );

    // Redis out of reach: the answer says at once that only this node's
    // users got it.
    redis.kill();
    wait_metric(&poster, "wschat_redis_up", 0.0);
    let (head, answer) = post("v4 is out");
    assert_eq!(head.status, 202, "{answer}");
    assert!(answer.contains(r#""local_only":true"#), "{answer}");
}

/// `GET` on the API with `key`, as JSON.
fn api_get(server: &Server, key: &str, path: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\r\n",
        server.addr
    );
    let (head, body) = common::http_exchange(server.addr, request.as_bytes());
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (head.status, json)
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn the_api_reads_every_node_s_rooms_and_history_on_any_node() {
    const KEY: &str = "the cluster test's API key";
    let key = common::tls::file_with("cluster-api-read-key", KEY);
    let key_flag = ["--api-key-file", key.to_str().unwrap()];
    let mut redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    // n2 has no user anywhere: what it answers comes from Redis.
    let n2 = node(&redis, "n2", &key_flag);
    [&n1, &n2].into_iter().for_each(wait_up);
    let mut a = Client::connect_path(n1.addr, "/rust", None);
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    a.send_text("/nick alice");
    assert_eq!(
        next_text_within(&mut a, WAIT),
        format!("{} is now alice", qualified(&a, "n1"))
    );
    let b = Client::connect_path(n1.addr, "/rust", None);
    assert_eq!(
        next_text_within(&mut a, WAIT),
        format!("{} joined", qualified(&b, "n1"))
    );
    a.send_text("said on n1");
    a.send_text("and again");

    // The directory lists rooms once a heartbeat refreshed it (2 s).
    let deadline = Instant::now() + WAIT;
    let rooms = loop {
        let (status, rooms) = api_get(&n2, KEY, "/api/rooms");
        assert_eq!(status, 200, "{rooms}");
        if rooms["rooms"][0]["last_seq"] == 2 {
            break rooms;
        }
        assert!(
            Instant::now() < deadline,
            "n2 never listed n1's room: {rooms}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let listed = &rooms["rooms"][0];
    assert_eq!(listed["name"], "rust", "{rooms}");
    assert_eq!(listed["count"], 2, "{rooms}");
    let mut users: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    users.sort_unstable();
    let b_name = qualified(&b, "n1");
    assert_eq!(users, [b_name.as_str(), "alice"], "{rooms}");
    assert_eq!(
        (rooms["count"].clone(), rooms["complete"].clone()),
        (1.into(), true.into())
    );
    assert!(rooms.get("local_only").is_none(), "{rooms}");

    let (status, history) = api_get(&n2, KEY, "/api/rooms/rust/history?since=1");
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["last_seq"], 2, "{history}");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{history}");
    assert_eq!(messages[0]["seq"], 2);
    assert_eq!(messages[0]["from"], "alice");
    assert_eq!(messages[0]["text"], "and again");
    let (status, all) = api_get(&n2, KEY, "/api/rooms/rust/history");
    assert_eq!(
        (status, all["messages"].as_array().unwrap().len()),
        (200, 2),
        "{all}"
    );
    let (status, none) = api_get(&n2, KEY, "/api/rooms/nowhere/history");
    assert_eq!(status, 404, "{none}");
    let (status, bad) = api_get(&n2, KEY, "/api/rooms/rust/history?since=x");
    assert_eq!(status, 400, "{bad}");

    // Redis out of reach: n2 answers from what it holds, and says so.
    redis.kill();
    wait_metric(&n2, "wschat_redis_up", 0.0);
    let (status, local) = api_get(&n2, KEY, "/api/rooms");
    assert_eq!(status, 200, "{local}");
    assert_eq!(local["local_only"], true, "{local}");
    assert_eq!(local["rooms"], serde_json::json!([]), "{local}");
}

/// Node's own WebSocket client on two nodes: `a` on the first says
/// hello, `b` on the second prints everything it gets until it has heard
/// it (bounded by a timer), then both close.
const NODE_SCRIPT: &str = r#"
const a = new WebSocket(process.env.A_URL);
const b = new WebSocket(process.env.B_URL);
const stop = setTimeout(() => { console.log("TIMEOUT"); process.exit(1); }, 15000);
let open = 0;
const ready = () => { if (++open === 2) a.send("hello from node"); };
a.onopen = ready;
b.onopen = ready;
a.onmessage = m => console.log(`a: ${m.data}`);
b.onmessage = m => {
  console.log(`b: ${m.data}`);
  if (`${m.data}`.endsWith(": hello from node")) {
    clearTimeout(stop);
    setTimeout(() => { a.close(); b.close(); process.exit(0); }, 300);
  }
};
"#;

#[test]
#[ignore = "needs redis-server and Node 20.10+; run with --include-ignored"]
fn node_websocket_clients_chat_across_nodes() {
    let flag = common::node::required_flag();
    let redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    let n2 = node(&redis, "n2", &[]);
    wait_up(&n1);
    wait_up(&n2);
    // Both nodes hear the room before Node's clients come.
    let _k1 = Client::connect_path(n1.addr, "/node", None);
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    let mut k2 = Client::connect_path(n2.addr, "/node", None);
    wait_metric(&n2, "wschat_redis_rooms_heard", 1.0);
    let mut command = std::process::Command::new("node");
    command.args(flag).args(["-e", NODE_SCRIPT]);
    let out = command
        .env("A_URL", format!("ws://{}/node", n1.addr))
        .env("B_URL", format!("ws://{}/node", n2.addr))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with(": hello from node"))
        .collect();
    assert_eq!(said.len(), 1, "b heard it once, a not at all: {stdout}");
    assert!(
        said[0].starts_with("b: User ") && said[0].contains("@n1: "),
        "{stdout}"
    );
    // And a tungstenite client on n2 heard it too.
    let deadline = Instant::now() + WAIT;
    while !next_text_within(&mut k2, WAIT).ends_with("@n1: hello from node") {
        assert!(Instant::now() < deadline);
    }
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn redis_dropping_a_subscriber_over_its_buffer_limit_is_said_and_recovered() {
    // Subscribers may hold 4 KiB of pushes beyond the 16 KiB Redis writes
    // from its own buffer: a 64 KiB message is more.
    let redis = RedisServer::start(&["--client-output-buffer-limit", "pubsub 4096 0 0"]);
    let ([n1, n2], [mut a, mut b, mut a2]) = two_nodes_three_users(&redis);

    let big = "x".repeat(64 * 1024);
    a.send_text(&big);
    let out_of_reach = "wschat: other nodes are out of reach: messages here reach this node only, and are not kept in the shared history";
    let back = "wschat: other nodes are back in reach: chat spans every node again (what they said meanwhile is not shown here)";
    for client in [&mut a, &mut b] {
        assert_eq!(next_text_within(client, WAIT), out_of_reach);
        assert_eq!(next_text_within(client, WAIT), back);
    }
    assert_eq!(n2.metrics().value("wschat_redis_outages"), Some(1.0));
    wait_metric(&n1, "wschat_redis_rooms_heard", 1.0);
    wait_metric(&n2, "wschat_redis_rooms_heard", 1.0);
    a.send_text("small again");
    let small = format!("{}: small again", qualified(&a, "n1"));
    assert_eq!(b.next_text(), small);
    // Its sender's node did not hear the big one back (every subscriber
    // was dropped for it) but has it from the script's reply: shown there
    // once, numbered, after the outage was told.
    let mut heard = Vec::new();
    while heard.last() != Some(&small) {
        heard.push(next_text_within(&mut a2, WAIT));
    }
    let big_line = format!("{}: {big}", qualified(&a, "n1"));
    let at = |line: &str| heard.iter().position(|h| h == line);
    assert_eq!(
        heard.len(),
        4,
        "{:?}",
        heard
            .iter()
            .map(|h| &h[..h.len().min(80)])
            .collect::<Vec<_>>()
    );
    assert!(at(out_of_reach) < at(&big_line) && at(&big_line).is_some());
    assert!(at(back).is_some());
    assert_eq!(n1.metrics().value("wschat_redis_unheard"), Some(1.0));
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn private_messages_reach_a_user_on_another_node_only() {
    let redis = RedisServer::start(&[]);
    let (_nodes, [mut a, mut b, mut a2]) = two_nodes_three_users(&redis);
    let (qa, qb) = (qualified(&a, "n1"), qualified(&b, "n2"));

    a.send_text(&format!("/msg {qb} psst"));
    assert_eq!(a.next_text(), format!("[private to {qb}] psst"));
    assert_eq!(b.next_text(), format!("[private] {qa}: psst"));
    // By nickname too, and to a user of one's own node by its qualified name.
    b.send_text("/nick bea");
    let nick = format!("{qb} is now bea");
    for client in [&mut a, &mut a2, &mut b] {
        assert_eq!(client.next_text(), nick);
    }
    a.send_text("/msg BEA hi bea");
    assert_eq!(a.next_text(), "[private to bea] hi bea");
    assert_eq!(b.next_text(), format!("[private] {qa}: hi bea"));
    let qa2 = qualified(&a2, "n1");
    b.send_text(&format!("/msg {qa2} local?"));
    assert_eq!(b.next_text(), format!("[private to {qa2}] local?"));
    assert_eq!(a2.next_text(), "[private] bea: local?");
    a.send_text(&format!("/msg {qa2} same node"));
    assert_eq!(a.next_text(), format!("[private to {qa2}] same node"));
    assert_eq!(a2.next_text(), format!("[private] {qa}: same node"));
    // Nobody else heard any of it.
    assert!(a.silent_for(Duration::from_millis(300)).is_ok());
    b.send_text("/msg User 1@n9 nobody");
    assert!(b.next_text().starts_with("error: nobody called User 1@n9"));
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_node_restarted_while_the_others_keep_chatting_catches_up() {
    let redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    let mut n2 = node(&redis, "n2", &[]);
    wait_up(&n1);
    wait_up(&n2);
    let mut a = join(&n1);
    let b = join(&n2);
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n2")));
    let mut a2 = n1.client();
    assert_eq!(a.next_text(), format!("{} joined", qualified(&a2, "n1")));

    // n2 goes down (SIGTERM: its users are closed 1001 and leave).
    n2.signal(libc::SIGTERM);
    assert!(n2.wait_exit(WAIT).is_some(), "n2 did not stop");
    let b_left = format!("{} left", qualified(&b, "n2"));
    assert_eq!(next_text_within(&mut a, WAIT), b_left);
    assert_eq!(next_text_within(&mut a2, WAIT), b_left);
    drop(b);
    // n1 chats on meanwhile.
    let said: Vec<String> = ["while n2 was down", "still down"]
        .iter()
        .map(|text| {
            a.send_text(text);
            let line = format!("{}: {text}", qualified(&a, "n1"));
            assert_eq!(a2.next_text(), line);
            line
        })
        .collect();

    // n2 again (a new process): its newcomer gets what was said, then chat.
    let n2 = node(&redis, "n2", &[]);
    wait_up(&n2);
    let mut c = Client::connect_path(n2.addr, "/", None);
    for line in &said {
        assert_eq!(&c.next_text(), line);
    }
    let c_joined = format!("{} joined", qualified(&c, "n2"));
    assert_eq!(next_text_within(&mut a, WAIT), c_joined);
    wait_metric(&n2, "wschat_redis_rooms_heard", 1.0);
    c.send_text("back");
    let back = format!("{}: back", qualified(&c, "n2"));
    assert_eq!(a.next_text(), back);
    assert_eq!(a2.next_text(), c_joined);
    assert_eq!(a2.next_text(), back);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn clients_joining_at_once_on_every_node_get_each_message_once() {
    let redis = RedisServer::start(&[]);
    let nodes = three_nodes(&redis);
    let mut clients: Vec<Client> = (0..6).map(|i| nodes[i % 3].client()).collect();
    for n in &nodes {
        wait_metric(n, "wschat_redis_rooms_heard", 1.0);
    }
    // Joins and the history race at the start: let them settle.
    for c in clients.iter_mut() {
        while c.silent_for(Duration::from_millis(500)).is_err() {}
    }
    clients[0].send_text("once");
    let from = format!("{}: once", qualified(&clients[0], "n1"));
    for c in clients.iter_mut().skip(1) {
        assert_eq!(c.next_text(), from);
    }
    for c in clients.iter_mut() {
        assert!(
            c.silent_for(Duration::from_millis(300)).is_ok(),
            "client {}",
            c.port
        );
    }
}

/// Drops `client`'s connection without a close (a network failure).
fn drop_connection(client: Client) {
    let stream = client.ws.get_ref();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_resume_on_another_node_keeps_the_name_and_the_room_sees_nothing() {
    let redis = RedisServer::start(&[]);
    let nodes: Vec<Server> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&redis, id, &["--resume-grace", "2"]))
        .collect();
    nodes.iter().for_each(wait_up);
    let [mut a, mut b, mut c] = one_user_each(&nodes);
    let mut alice = Client::json(nodes[0].addr, "/");
    let token = alice.next_json_of("system")["resume"]
        .as_str()
        .expect("a token")
        .to_owned();
    let joined = format!("{} joined", qualified(&alice, "n1"));
    for observer in [&mut a, &mut b, &mut c] {
        assert_eq!(observer.next_text(), joined);
    }
    alice.send_text(r#"{"type":"nick","name":"alice"}"#);
    alice.next_json_of("nick");
    let renamed = format!("{} is now alice", qualified(&alice, "n1"));
    for observer in [&mut a, &mut b, &mut c] {
        assert_eq!(observer.next_text(), renamed);
    }
    drop_connection(alice);

    let mut back = Client::json(nodes[1].addr, &format!("/?resume={token}&since=0"));
    let welcome = back.next_json_of("system");
    assert_eq!(welcome["you"], "alice", "{welcome}");
    let fresh = welcome["resume"].as_str().expect("a new token").to_owned();
    assert_ne!(fresh, token);
    // Past the grace (2 s) and its margin on n1 (1 s): no leave, no join.
    for observer in [&mut a, &mut b, &mut c] {
        assert!(
            observer.silent_for(Duration::from_millis(1200)).is_ok(),
            "client {} heard of the resume",
            observer.port
        );
    }
    back.send_text(r#"{"type":"message","text":"back on n2"}"#);
    for observer in [&mut a, &mut b, &mut c] {
        assert_eq!(observer.next_text(), "alice: back on n2");
    }
    // The name is still claimed across nodes (now by n2).
    c.send_text("/nick alice");
    assert!(c.next_text().contains("alice"), "the name is refused on n3");
    a.send_text("/who");
    let who = a.next_text();
    assert_eq!(who.matches("alice").count(), 1, "{who}");

    // After the grace the token is spent: a new user on n3, and the
    // room hears alice leave once.
    drop_connection(back);
    for observer in [&mut a, &mut b, &mut c] {
        assert_eq!(next_text_within(observer, WAIT), "alice left");
    }
    let mut late = Client::json(nodes[2].addr, &format!("/?resume={fresh}"));
    assert_eq!(
        late.next_json_of("system")["you"],
        format!("User {}@n3", late.port)
    );
    assert!(late.next_json_of("system")["text"]
        .as_str()
        .unwrap()
        .contains("not valid here"));
    let joined = format!("User {}@n3 joined", late.port);
    for observer in [&mut a, &mut b, &mut c] {
        assert_eq!(observer.next_text(), joined);
    }
}

/// The `/rooms` reply `client` gets.
fn rooms_of(client: &mut Client) -> String {
    client.send_text("/rooms");
    client.next_text()
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn rooms_lists_every_node_s_rooms_and_a_killed_node_s_room_goes() {
    let redis = RedisServer::start(&[]);
    let nodes = three_nodes(&redis);
    let mut a = join(&nodes[0]);
    // Rooms only n2 and n3 have.
    let mut b1 = Client::connect_path(nodes[1].addr, "/bonly", None);
    let b2 = Client::connect_path(nodes[1].addr, "/bonly", None);
    assert_eq!(b1.next_text(), format!("{} joined", qualified(&b2, "n2")));
    let c1 = Client::connect_path(nodes[2].addr, "/conly", None);
    // A node's directory entries go to Redis before its later events on
    // the same link: once a hears these joins, n2 and n3 are listed.
    let b = nodes[1].client();
    assert_eq!(a.next_text(), format!("{} joined", qualified(&b, "n2")));
    let c = nodes[2].client();
    assert_eq!(a.next_text(), format!("{} joined", qualified(&c, "n3")));

    assert_eq!(
        rooms_of(&mut a),
        "wschat: Rooms: bonly (2), conly (1), lobby (3)"
    );
    let mut j = Client::json(nodes[0].addr, "/");
    assert_eq!(a.next_text(), format!("{} joined", qualified(&j, "n1")));
    let welcome = j.next_json_of("system");
    assert_eq!(welcome["count"], 4, "{welcome}");
    j.send_text(r#"{"type":"command","text":"/rooms"}"#);
    let listed = j.next_json_of("system");
    assert_eq!(
        listed["rooms"],
        serde_json::json!([
            {"name": "bonly", "users": 2},
            {"name": "conly", "users": 1},
            {"name": "lobby", "users": 4}
        ])
    );
    assert_eq!(listed["count"], 3);

    // The busiest first within the limit, the rest counted.
    let limited = node(&redis, "n4", &["--list-limit", "1"]);
    wait_up(&limited);
    let mut d = join(&limited);
    assert_eq!(a.next_text(), format!("{} joined", qualified(&d, "n4")));
    assert_eq!(rooms_of(&mut d), "wschat: Rooms: lobby (5), and 2 more");
    d.close(1000);
    assert_eq!(a.next_text(), format!("{} left", qualified(&d, "n4")));

    // n3 dies without a word: its room goes from the listing once its
    // directory entry expires (6 s, as presence entries, refreshed with
    // them), which is before its lobby user is told to have left.
    nodes[2].signal(libc::SIGKILL);
    let c_left = format!("{} left", qualified(&c, "n3"));
    assert_eq!(next_text_within(&mut a, Duration::from_secs(30)), c_left);
    assert_eq!(rooms_of(&mut a), "wschat: Rooms: bonly (2), lobby (3)");
    drop((c, c1, b2));
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_message_said_while_redis_stalls_comes_late_or_reaches_this_node_and_is_said() {
    let mut redis = RedisServer::start(&[]);
    let ([n1, _n2], [mut a, mut b, mut a2]) = two_nodes_three_users(&redis);
    let published = |n: &Server| n.metrics().value("wschat_redis_published").unwrap_or(0.0);

    // Redis stalls (stopped) with the publish script's reply awaited:
    // nobody has the message yet, everybody gets it, once, when Redis
    // goes on (within the command link's 10 s reply timeout).
    redis.signal(libc::SIGSTOP);
    let before = published(&n1);
    a.send_text("said in a stall");
    wait_metric(&n1, "wschat_redis_published", before + 1.0);
    assert!(a2.silent_for(Duration::from_millis(300)).is_ok());
    redis.signal(libc::SIGCONT);
    let late = format!("{}: said in a stall", qualified(&a, "n1"));
    assert_eq!(a2.next_text(), late);
    assert_eq!(b.next_text(), late);
    assert!(
        a.silent_for(Duration::from_millis(300)).is_ok(),
        "not back to its sender"
    );

    // Redis dies with the reply awaited: the message may or may not have
    // run, this node will not hear it back. Its users still get it (after
    // the outage is told, unnumbered), and its sender is told plainly.
    redis.signal(libc::SIGSTOP);
    let before = published(&n1);
    a.send_text("lost in a stall");
    wait_metric(&n1, "wschat_redis_published", before + 1.0);
    redis.kill();
    let out_of_reach = "wschat: other nodes are out of reach: messages here reach this node only, and are not kept in the shared history";
    for client in [&mut a, &mut a2, &mut b] {
        assert_eq!(next_text_within(client, WAIT), out_of_reach);
    }
    assert_eq!(
        a2.next_text(),
        format!("{}: lost in a stall", qualified(&a, "n1"))
    );
    assert_eq!(
        a.next_text(),
        "wschat: your message \"lost in a stall\" was shown on this node only: Redis did not confirm it, so other nodes may not have it"
    );
    assert!(b.silent_for(Duration::from_millis(300)).is_ok());
    assert_eq!(n1.metrics().value("wschat_redis_lost"), Some(1.0));

    // While Redis is out of reach, /rooms lists this node's rooms and
    // says so.
    assert_eq!(
        rooms_of(&mut a),
        "wschat: Rooms: lobby (3) (this node only: other nodes are out of reach)"
    );
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_message_redis_runs_after_its_node_gave_up_on_it_is_shown_there_once() {
    let redis = RedisServer::start(&[]);
    let ([n1, _n2], [mut a, mut b, mut a2]) = two_nodes_three_users(&redis);
    // Just heard: n1's subscriber link pings only after 5 s of quiet, so
    // it outlives its command link's 10 s reply timeout by seconds.
    b.send_text("before");
    let before = format!("{}: before", qualified(&b, "n2"));
    assert_eq!(a2.next_text(), before);
    assert_eq!(a.next_text(), before);

    redis.signal(libc::SIGSTOP);
    a.send_text("outlived");
    // n1 gives up on the reply: shown there, its sender told.
    wait_metric(&n1, "wschat_redis_up", 0.0);
    redis.signal(libc::SIGCONT);
    let said = format!("{}: outlived", qualified(&a, "n1"));
    let until = |client: &mut Client, line: &str| {
        let mut heard = Vec::new();
        while heard.last().map(String::as_str) != Some(line) {
            heard.push(next_text_within(client, WAIT));
        }
        heard
    };
    until(&mut a2, &said);
    until(&mut a, "wschat: your message \"outlived\" was shown on this node only: Redis did not confirm it, so other nodes may not have it");
    // Redis ran it on waking: n2 shows it, and n1, hearing it back on its
    // live subscription, does not show it again.
    until(&mut b, &said);
    wait_metric(&n1, "wschat_redis_heard_late", 1.0);
    let back = "wschat: other nodes are back in reach: chat spans every node again (what they said meanwhile is not shown here)";
    let mut heard = until(&mut a2, back);
    b.send_text("after");
    let after = format!("{}: after", qualified(&b, "n2"));
    heard.extend(until(&mut a2, &after));
    assert!(!heard.contains(&said), "shown twice: {heard:?}");
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_stall_that_fills_the_queue_toward_redis_shows_the_rest_here_and_says_so() {
    let redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    wait_up(&n1);
    let mut a = join(&n1);
    let mut a2 = n1.client();
    assert_eq!(a.next_text(), format!("{} joined", qualified(&a2, "n1")));

    // Stopped, Redis reads nothing: the kernel's buffers fill, then the
    // command link's 4 MiB of output. Bounded in count: 64 × 512 KiB.
    redis.signal(libc::SIGSTOP);
    let body = "x".repeat(512 * 1024);
    let mut sent = 0;
    while n1.metrics().value("wschat_redis_dropped") == Some(0.0) {
        assert!(sent < 64, "nothing dropped after {sent} messages");
        a.send_text(&format!("{sent} {body}"));
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // What could not be queued is shown here at once, unnumbered, and its
    // sender is told; Redis is still reachable as far as the node knows.
    let shown = next_text_within(&mut a2, WAIT);
    let prefix = format!("{}: ", qualified(&a, "n1"));
    let first = shown
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{}", &shown[..shown.len().min(80)]));
    let told = next_text_within(&mut a, WAIT);
    assert_eq!(
        told,
        format!(
            "wschat: your message \"{first} {}…\" was shown on this node only: Redis did not confirm it, so other nodes may not have it",
            "x".repeat(39 - first.len())
        )
    );
    assert_eq!(n1.metrics().value("wschat_redis_up"), Some(1.0));
    redis.signal(libc::SIGCONT);
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn another_publisher_s_garbage_is_counted_said_once_and_harms_nobody() {
    let redis = RedisServer::start(&[]);
    let ([n1, _n2], [mut a, mut b, _a2]) = two_nodes_three_users(&redis);

    // Some other program on the same Redis publishes 500 pushes of no
    // form wschat knows on the lobby's channel, pipelined on one socket.
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let garbage = "PUBLISH wschat:{lobby}:events not-a-wschat-event\r\n".repeat(500);
    std::io::Write::write_all(&mut stranger, garbage.as_bytes()).unwrap();
    wait_metric(&n1, "wschat_redis_malformed", 500.0);

    // Every one is counted, but the log says it once, not 500 times.
    let warnings = n1.log().matches("a malformed event in lobby").count();
    assert_eq!(warnings, 1, "log:\n{}", n1.log());

    // Pushes of the bus's form whose event is not the chat's encoding
    // (another release, say) get as far as the chat: the same.
    let foreign = "PUBLISH wschat:{lobby}:events \"0 - v2|a future event\"\r\n".repeat(300);
    std::io::Write::write_all(&mut stranger, foreign.as_bytes()).unwrap();
    wait_metric(&n1, "wschat_relay_undecodable", 300.0);
    let warnings = n1
        .log()
        .matches("is not of this release's encoding")
        .count();
    assert_eq!(warnings, 1, "log:\n{}", n1.log());
    a.send_text("still here");
    assert_eq!(
        b.next_text(),
        format!("{}: still here", qualified(&a, "n1"))
    );
}

#[test]
#[ignore = "needs redis-server; run with --include-ignored"]
fn a_name_claim_of_a_user_gone_is_not_answered_to_the_next_connection() {
    let redis = RedisServer::start(&[]);
    let n1 = node(&redis, "n1", &[]);
    wait_up(&n1);
    let mut watcher = join(&n1);
    let mut a = n1.client();
    assert_eq!(
        watcher.next_text(),
        format!("{} joined", qualified(&a, "n1"))
    );

    // Redis holds every command for a while, so the claim of a's `/nick`
    // is still unanswered when a is gone and the next connection, given
    // a's id, has joined.
    redis_cli(&redis, &["CLIENT", "PAUSE", "1500", "ALL"]);
    a.send_text("/nick ghost");
    let a_left = format!("{} left", qualified(&a, "n1"));
    drop_connection(a);
    assert_eq!(next_text_within(&mut watcher, WAIT), a_left);
    let mut b = n1.client();
    let b_name = qualified(&b, "n1");
    assert_eq!(
        next_text_within(&mut watcher, WAIT),
        format!("{b_name} joined")
    );

    // The answer comes once Redis runs again: nobody is renamed or told.
    assert!(
        b.silent_for(Duration::from_secs(3)).is_ok(),
        "the newcomer was answered a's claim"
    );
    assert!(
        watcher.silent_for(Duration::from_millis(200)).is_ok(),
        "the room was told of a's claim"
    );
    // The name a claimed is free for the next to ask.
    b.send_text("/nick ghost");
    assert_eq!(
        next_text_within(&mut b, WAIT),
        format!("{b_name} is now ghost")
    );
}
