//! The operator's endpoints on the chat port: `GET /healthz` and
//! `GET /metrics` (Prometheus text format 0.0.4).

mod common;

use common::{upgrade_request, Scrape, Server};

#[test]
fn healthz_answers_ok() {
    let server = Server::start(&[]);
    let (head, body) = server.get("/healthz");
    assert_eq!(head.status, 200);
    assert_eq!(body.trim_end(), "ok");
    // A query string does not change the endpoint.
    let (head, _) = server.get("/healthz?probe=1");
    assert_eq!(head.status, 200);
}

#[test]
fn metrics_are_prometheus_text_with_help_and_type_for_every_family() {
    let server = Server::start(&[]);
    let scrape = server.metrics();
    assert!(!scrape.samples.is_empty());
    // `Scrape::parse` already rejected any sample without # HELP and
    // # TYPE before it, and any value that is not a number.
    for (name, kind) in [
        ("wschat_connections", "gauge"),
        ("wschat_connections_open", "gauge"),
        ("wschat_outbox_bytes", "gauge"),
        ("wschat_chat_users", "gauge"),
        ("wschat_connections_accepted_total", "counter"),
        ("wschat_websockets_opened_total", "counter"),
        ("wschat_handshakes_refused_total", "counter"),
        ("wschat_http_requests_total", "counter"),
        ("wschat_messages_received_total", "counter"),
        ("wschat_messages_received_compressed_total", "counter"),
        ("wschat_bytes_received_total", "counter"),
        ("wschat_messages_sent_total", "counter"),
        ("wschat_deliveries_total", "counter"),
        ("wschat_deliveries_compressed_total", "counter"),
        ("wschat_bytes_sent_total", "counter"),
        ("wschat_slow_consumer_disconnects_total", "counter"),
        ("wschat_flood_dropped_messages_total", "counter"),
        ("wschat_flood_disconnects_total", "counter"),
        ("wschat_idle_disconnects_total", "counter"),
    ] {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name}"
        );
    }
    // Counter names end in _total.
    for (name, kind) in &scrape.types {
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
    }
    // The scrape itself is the one connection held, and no one chats.
    assert_eq!(scrape.count("wschat_connections"), 1);
    assert_eq!(scrape.count("wschat_connections_open"), 0);
    assert_eq!(scrape.count("wschat_chat_users"), 0);
}

#[test]
fn the_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                # HELP b B.\n# TYPE b gauge\nb{reason=\"x \\\"y\\\"\",k=\"v\"} 1.5\n";
    let scrape = Scrape::parse(good).unwrap();
    assert_eq!(scrape.get("a_total"), 3.0);
    assert_eq!(scrape.get("b{reason=\"x \\\"y\\\"\",k=\"v\"}"), 1.5);
    for bad in [
        "a_total 3\n",                                     // no HELP, no TYPE
        "# HELP a A.\na 3\n",                              // no TYPE
        "# TYPE a gauge\na 3\n",                           // no HELP
        "# HELP a A.\n# TYPE a gauge\na three\n",          // not a number
        "# HELP a A.\n# TYPE a gauge\na{x=\"1} 3\n",       // unterminated
        "# HELP a A.\n# TYPE a gauge\n1a 3\n",             // bad name
        "# HELP a A.\n# TYPE a wobble\na 3\n",             // bad type
        "# HELP a A.\n# TYPE a gauge\na\n",                // no value
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"junk} 3\n", // junk after a label
    ] {
        assert!(Scrape::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn counters_follow_a_known_sequence() {
    let server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    let mut c = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    assert_eq!(a.next_text(), format!("User {} joined", c.port));
    assert_eq!(b.next_text(), format!("User {} joined", c.port));

    let before = server.metrics();
    assert_eq!(before.count("wschat_connections_open"), 3);
    assert_eq!(before.count("wschat_chat_users"), 3);

    // Three messages from A, each received by B and C.
    for i in 0..3 {
        a.send_text(&format!("message {i}"));
    }
    for i in 0..3 {
        let relayed = format!("User {}: message {i}", a.port);
        assert_eq!(b.next_text(), relayed);
        assert_eq!(c.next_text(), relayed);
    }
    // A refused handshake and a plain HTTP request.
    let evil = upgrade_request(server.addr, "Origin: http://evil.example\r\n");
    let (head, _) = common::http_exchange(server.addr, evil.as_bytes());
    assert_eq!(head.status, 403);
    let (head, _) = server.get("/healthz");
    assert_eq!(head.status, 200);

    let after = server.metrics();
    let delta = |name: &str| after.count(name) - before.count(name);
    assert_eq!(delta("wschat_messages_received_total"), 3);
    assert_eq!(
        delta("wschat_bytes_received_total"),
        3 * "message 0".len() as u64
    );
    assert_eq!(
        delta("wschat_messages_sent_total"),
        3,
        "one encoding per broadcast"
    );
    assert!(
        delta("wschat_deliveries_total") >= 6,
        "3 messages to 2 users each: {} deliveries",
        delta("wschat_deliveries_total")
    );
    assert!(
        delta("wschat_bytes_sent_total") >= 6 * format!("User {}: message 0", a.port).len() as u64
    );
    // The refused upgrade, /healthz and the scrape after: three more
    // connections accepted, none opened as a WebSocket.
    assert_eq!(delta("wschat_connections_accepted_total"), 3);
    assert_eq!(delta("wschat_websockets_opened_total"), 0);
    assert_eq!(
        after.count("wschat_handshakes_refused_total{reason=\"origin not allowed\"}"),
        1
    );
    // /healthz and the second scrape are plain HTTP requests.
    assert_eq!(delta("wschat_http_requests_total"), 2);
    assert_eq!(after.count("wschat_slow_consumer_disconnects_total"), 0);
    assert_eq!(after.count("wschat_flood_dropped_messages_total"), 0);
    assert_eq!(after.count("wschat_outbox_bytes"), 0);

    // A leaves: the gauges follow.
    a.close(1000);
    assert_eq!(a.next_close_code(), 1000);
    a.expect_connection_closed();
    let left = format!("User {} left", a.port);
    assert_eq!(b.next_text(), left);
    assert_eq!(c.next_text(), left);
    let end = server.metrics();
    assert_eq!(end.count("wschat_chat_users"), 2);
    assert_eq!(end.count("wschat_connections_open"), 2);
}
