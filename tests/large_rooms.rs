//! Joins and leaves in large rooms are summarised, not announced one by
//! one (issue 10, item 4): filling a room of N costs O(N) deliveries per
//! second rather than N² in all, while small rooms keep the seed's lines.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::crowd::{idle_crowd, loopback};
use common::{Client, Server};

/// Joins and leaves a plain-text line tells: `User 5 joined` is one join,
/// `3 users joined, 1 left (9 here)` three and one; `None` for any other
/// line.
fn told(line: &str) -> Option<(u32, u32)> {
    if line.starts_with("User ") && !line.contains(':') {
        if line.ends_with(" joined") {
            return Some((1, 0));
        }
        if line.ends_with(" left") {
            return Some((0, 1));
        }
    }
    let (changes, _here) = line.strip_suffix(" here)")?.rsplit_once(" (")?;
    let (mut joined, mut left) = (0, 0);
    for part in changes.split(", ") {
        let mut words = part.split(' ');
        let n: u32 = words.next()?.parse().ok()?;
        match words.next_back()? {
            "joined" => joined = n,
            "left" => left = n,
            _ => return None,
        }
    }
    Some((joined, left))
}

/// Reads `client`'s lines up to and including `last`; returns the
/// joins and leaves they told, in sum, and the lines.
fn told_until(client: &mut Client, last: &str) -> ((u32, u32), Vec<String>) {
    let mut lines = Vec::new();
    let (mut joined, mut left) = (0, 0);
    loop {
        let line = client.next_text();
        if let Some((j, l)) = told(&line) {
            joined += j;
            left += l;
        }
        let done = line == last;
        lines.push(line);
        if done {
            return ((joined, left), lines);
        }
    }
}

#[test]
fn small_rooms_keep_the_seeds_lines_and_large_ones_get_summaries() {
    let server = Server::start(&["--announce-limit", "3"]);
    let [mut a, mut b, c] =
        [1, 2, 3].map(|n| Client::connect_to(server.addr, loopback(n), "/", None));
    // Up to the limit: exactly the seed's lines.
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    assert_eq!(a.next_text(), format!("User {} joined", c.port));
    assert_eq!(b.next_text(), format!("User {} joined", c.port));

    // The fourth makes the room large: a summary, at once, to everyone,
    // the newcomer too; a JSON client gets it as a presence event.
    let mut j = Client::connect_to(server.addr, loopback(4), "/", Some("wschat.v1.json"));
    let welcome = j.next_json();
    assert_eq!(
        (&welcome["type"], &welcome["count"]),
        (&"system".into(), &4.into())
    );
    let presence = j.next_json();
    assert_eq!(presence["type"], "presence");
    assert_eq!(
        (&presence["joined"], &presence["left"], &presence["count"]),
        (&1.into(), &0.into(), &4.into())
    );
    assert_eq!(presence["room"], "lobby");
    assert!(presence["ts"].as_u64().is_some());
    assert_eq!(a.next_text(), "1 user joined (4 here)");

    // Two more within the second are counted, and told (at the latest)
    // with the first event after the second has passed.
    let d = Client::connect_to(server.addr, loopback(5), "/", None);
    let e = Client::connect_to(server.addr, loopback(6), "/", None);
    thread::sleep(Duration::from_millis(1100));
    a.send_text("hi");
    let hi = format!("User {}: hi", a.port);
    let (counts, lines) = told_until(&mut b, &hi);
    assert_eq!(counts, (3, 0), "{lines:?}");
    assert_eq!(
        lines[lines.len() - 2],
        "2 users joined (6 here)",
        "{lines:?}"
    );

    // Leaves too.
    drop((d, e));
    thread::sleep(Duration::from_millis(1100));
    a.send_text("still here");
    let (counts, lines) = told_until(&mut b, &format!("User {}: still here", a.port));
    assert_eq!(counts, (0, 2), "{lines:?}");
    assert!(
        lines[lines.len() - 2].ends_with("left (4 here)"),
        "{lines:?}"
    );

    // Back at the limit, the seed's lines again.
    drop(c);
    j.close(1000);
    let j_left = format!("User {} left", j.port);
    let (counts, lines) = told_until(&mut b, &j_left);
    assert_eq!(counts, (0, 2), "{lines:?}");
    a.send_text("small again");
    assert_eq!(b.next_text(), format!("User {}: small again", a.port));
}

#[test]
fn a_crowd_of_idle_users_costs_deliveries_linear_in_its_size() {
    // 4,000 users join the lobby and never read (the issue measured 20,000:
    // each join was told to every user, N² lines queued at users that do
    // not read). Spread over 200 addresses, as a crowd would be.
    const N: usize = 4000;
    let server = Server::start(&[]);
    let mut observer = Client::connect_to(server.addr, loopback(1), "/", None);
    let before = server.metrics().count("wschat_deliveries_total");
    let rss_before = server.rss_kib();
    let started = Instant::now();
    let mut crowd = Vec::new();
    for i in 0..200u8 {
        crowd.extend(idle_crowd(server.addr, loopback(2 + i), "/", N / 200));
    }
    let elapsed = started.elapsed();
    let deliveries = server.metrics().count("wschat_deliveries_total") - before;
    let rss_growth = server.rss_kib().saturating_sub(rss_before);
    eprintln!(
        "{N} joins in {elapsed:?}: {deliveries} deliveries ({} per join), RSS +{rss_growth} KiB",
        deliveries as f64 / N as f64
    );
    // Up to --announce-limit 100, a line per join to each other member;
    // beyond, at most one summary a second to each member.
    let lines = 100 * 99 / 2;
    let seconds = elapsed.as_secs() + 2;
    let bound = lines + seconds as usize * (N + 1);
    assert!(
        (deliveries as usize) <= bound,
        "{deliveries} deliveries for {N} joins in {elapsed:?}; at most {bound} (N² would be {})",
        N * N / 2
    );
    // Idle connections stay about a kilobyte each even in a debug build.
    assert!(rss_growth < (N as u64) * 4, "RSS grew {rss_growth} KiB");

    // Nothing went untold: what the observer heard adds up to everyone.
    thread::sleep(Duration::from_millis(1100));
    observer.send_text("/help");
    let ((joined, left), lines) = told_until(&mut observer, &format!("wschat: {}", HELP));
    assert_eq!((joined as usize, left), (N, 0), "{lines:?}");
    let summary = &lines[lines.len() - 2];
    assert!(summary.ends_with(&format!("({} here)", N + 1)), "{summary}");

    // A JSON newcomer's welcome names a bounded number of them, and says
    // how many there are.
    let mut json = Client::connect_to(server.addr, loopback(250), "/", Some("wschat.v1.json"));
    let welcome = json.next_json();
    assert_eq!(welcome["users"].as_array().map(Vec::len), Some(100));
    assert_eq!(welcome["count"], N + 2);
    drop(crowd);
}

/// The `/help` text (its reply ends the observer's reading).
const HELP: &str = wschat::chat::command::HELP;
