//! The chat page in a real browser: starts the real binary and runs
//! `tests/browser/e2e.mjs`, which drives Debian's Chromium through
//! playwright-core (two pages speaking `wschat.v1.json` plus a plain-text
//! Node client in one room: names, nicknames, commands, HTML shown as text,
//! resuming after a drop, own messages marked, private messages, the
//! unread count of a hidden tab, switching rooms with back/forward, and a
//! verified user's page opened with `?token=JWT`, for which the http run's
//! server has `--auth-secret-file`). The screenshot lands in
//! `target/browser/chat.png`.
//! The same run goes once more over https (`--tls-listen`, `--compression`,
//! a test CA): every socket is `wss://` with permessage-deflate agreed, and
//! a long message reaches each recipient compressed (`chat-https.png`).
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node` and
//! `tests/browser/node_modules` (`npm ci` there); `.ci/run` installs them.
//! So plain `cargo test` skips it as ignored, and `cargo test --
//! --include-ignored` (what `scripts/test.sh` runs) runs it, failing with
//! the list of what is missing if any of that is not there.

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::tls::TestPki;
use common::Server;

/// One browser at a time: two Chromiums on a small machine would only
/// race each other's waits.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// The bound on the whole browser run (the script bounds itself at 120 s
/// and every single wait at 8 s; this is the backstop).
const LIMIT: Duration = Duration::from_secs(180);

/// What the browser test needs that is not there.
fn missing(repo: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push("node".into());
    }
    let playwright = repo.join("tests/browser/node_modules/playwright-core");
    if !playwright.is_dir() {
        missing.push(format!(
            "{} (cd tests/browser && npm ci)",
            playwright.display()
        ));
    }
    missing
}

#[test]
fn missing_names_each_requirement_and_its_fix() {
    let nowhere = Path::new("/nonexistent/wschat");
    let list = missing(nowhere, &nowhere.join("chromium"));
    let has = |what: &str| list.iter().any(|m| m == what);
    assert!(
        has("/nonexistent/wschat/chromium (apt-get install chromium)"),
        "{list:?}"
    );
    assert!(
        has("/nonexistent/wschat/tests/browser/node_modules/playwright-core (cd tests/browser && npm ci)"),
        "{list:?}"
    );
}

/// Runs `tests/browser/e2e.mjs` against `url` with `env` set, and checks
/// that it passed and left its screenshot `shot` (under target/browser).
fn run_e2e(url: &str, env: &[(&str, &OsStr)], shot: &str) {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    // Run, this test fails without what it needs: it is never skipped silently.
    let missing = missing(repo, &chromium);
    assert!(
        missing.is_empty(),
        "the browser test needs what is missing: {}; .ci/run installs all of it",
        missing.join(", ")
    );

    let mut command = Command::new("node");
    command
        .arg(repo.join("tests/browser/e2e.mjs"))
        .arg(url)
        .current_dir(repo)
        .env("CHROMIUM", &chromium)
        .env("NODE_NO_WARNINGS", "1")
        .env_remove("NODE_OPTIONS");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node tests/browser/e2e.mjs");

    // Drain both pipes on threads so a chatty run never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    println!("{out}");
    if !err.is_empty() {
        println!("stderr:\n{err}");
    }
    let report = format!(
        "browser e2e against {url} took {:.1} s\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        started.elapsed().as_secs_f64()
    );
    match status {
        None => panic!("the browser test did not finish within {LIMIT:?}\n{report}"),
        Some(status) => assert!(
            status.success(),
            "the browser test failed ({status})\n{report}"
        ),
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("browser e2e: ") && l.ends_with(" passed, 0 failed")),
        "no passing summary line\n{report}"
    );
    let shot = repo.join("target/browser").join(shot);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no screenshot at {}", shot.display());
}

/// The secret the http run's server verifies tokens with.
const SECRET: &str = "the browser test's secret, thirty-two bytes or more";

/// An HS256 JWT for `name`, valid ten minutes.
fn token(name: &str) -> String {
    common::jwt::for_user(name, 600, SECRET.as_bytes())
}

#[test]
#[ignore = "needs Chromium, Node 20+ and `npm ci` in tests/browser; run with `cargo test -- --include-ignored`"]
fn chat_page_in_chromium() {
    let dir = std::env::temp_dir().join(format!("wschat-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let server = Server::start(&["--auth-secret-file", secret.to_str().unwrap()]);
    let token = token("vera");
    run_e2e(
        &format!("http://{}", server.addr),
        &[
            ("WSCHAT_E2E_TOKEN", OsStr::new(&token)),
            ("WSCHAT_E2E_VERIFIED", OsStr::new("vera")),
        ],
        "chat.png",
    );
}

#[test]
#[ignore = "needs Chromium, Node 20+ and `npm ci` in tests/browser; run with `cargo test -- --include-ignored`"]
fn chat_page_in_chromium_over_https_with_deflate() {
    let pki = TestPki::new();
    let server = pki.start_server(&["--listen", "127.0.0.1:0"], &["--compression"]);
    let tls = server.tls_addr.expect("a TLS listener");
    run_e2e(
        &format!("https://{tls}"),
        &[
            // Chromium trusts this certificate's key; Node trusts the CA.
            ("WSCHAT_E2E_CERT", pki.cert_path.as_os_str()),
            ("NODE_EXTRA_CA_CERTS", pki.ca_path.as_os_str()),
        ],
        "chat-https.png",
    );
    let _ = server;
}
