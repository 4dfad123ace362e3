//! Running Node's WebSocket client: which flag the installed `node`
//! needs (shared by tests/node_repl.rs and tests/cluster.rs).

use std::process::Command;

/// The `node --version` line, or why it could not be had.
fn node_version() -> Result<String, String> {
    let output = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("`node --version` could not be run ({e})"))?;
    if !output.status.success() {
        return Err(format!("`node --version` failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The flag `node` of `version` (as `node --version` prints it, `v20.10.0`)
/// needs for a global `WebSocket`: none from 22, `--experimental-websocket`
/// from 20.10 (where it was added, with 21.0), and an error before that.
pub fn websocket_flag(version: &str) -> Result<Option<&'static str>, String> {
    let mut numbers = version.trim().trim_start_matches('v').split('.');
    let mut next = || numbers.next().and_then(|n| n.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (next(), next()) else {
        return Err(format!("unrecognised `node --version` output {version:?}"));
    };
    match (major, minor) {
        (22.., _) => Ok(None),
        (21, _) | (20, 10..) => Ok(Some("--experimental-websocket")),
        _ => Err(format!(
            "node {version} has no WebSocket client; this test needs Node 20.10+"
        )),
    }
}

/// The flag Node needs for `WebSocket`; panics (this test is never
/// skipped silently) without Node 20.10+.
pub fn required_flag() -> Option<&'static str> {
    node_version()
        .and_then(|v| websocket_flag(&v))
        .unwrap_or_else(|why| panic!("this test needs Node 20.10+ as `node`: {why}"))
}
