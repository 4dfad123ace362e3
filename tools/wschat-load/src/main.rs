//! `wschat-load`: the load generator for wschat and its comparison peers.
//!
//! N clients connect to a WebSocket chat server; K of them send messages
//! carrying a timestamped marker, open loop (`--rate`) or closed loop
//! (`--window`), and every other client should receive each one. The
//! tool reports deliveries per second, latency percentiles, lost
//! deliveries, connect rate and, given the server's pid, its CPU time
//! and memory. `--idle` only holds connections, for memory per
//! connection. `wss://` (with `--ca`) and `--deflate` (permessage-deflate)
//! measure the same over TLS and compressed. It runs on one thread so that the server, not the tool,
//! is what gets measured; `--help` lists the flags.

mod cli;
mod client;
mod deflate;
mod histogram;
mod marker;
mod procstat;
mod report;
mod rng;
mod runner;
mod tls;
mod tracker;

use std::process::ExitCode;

use clap::Parser;

/// File descriptors kept free beyond one per client (poll, stdio, /proc).
const SPARE_FDS: u64 = 32;

fn main() -> ExitCode {
    let config = match cli::Args::parse().into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("wschat-load: {message}");
            return ExitCode::from(2);
        }
    };
    match procstat::raise_fd_limit() {
        Ok(limit) if limit < config.clients as u64 + SPARE_FDS => eprintln!(
            "wschat-load: warning: the file descriptor limit {limit} is below {} clients; \
             connects beyond it will fail",
            config.clients
        ),
        Ok(_) => {}
        Err(e) => eprintln!("wschat-load: warning: cannot raise the file descriptor limit: {e}"),
    }
    for &pid in &config.server_pid {
        if procstat::sample(pid).is_none() {
            eprintln!(
                "wschat-load: warning: cannot read /proc/{pid}; server metrics will be missing"
            );
        }
    }
    let json = config.json;
    let report = match runner::Runner::new(config).and_then(runner::Runner::run) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("wschat-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        eprint!("{}", report.human());
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    ExitCode::SUCCESS
}
