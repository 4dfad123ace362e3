//! The `wschat` binary: parse the command line, start logging, run the loop.

use std::io::Write as _;
use std::net::ToSocketAddrs as _;
use std::process::ExitCode;

use clap::Parser;
use log::{debug, error, info, warn};

use wschat::chat::echo::Echo;
use wschat::chat::{Chat, ChatConfig};
use wschat::cluster::redis_bus::{RedisBus, DEFAULT_HISTORY_MAXLEN};
use wschat::cluster::url::RedisUrl;
use wschat::config::{default_node_id, Config};
use wschat::net::server::{Server, ServerConfig};
use wschat::net::stream::SPLICE_DESCRIPTORS;
use wschat::net::tls::TlsIdentity;
use wschat::service::{Clock, Service};

/// Descriptors kept back from `--max-connections`' default for the
/// listener, the poll instance, the signal pipe and the process itself
/// (and, unless it is off, for splicing: `SPLICE_DESCRIPTORS`).
const DESCRIPTOR_RESERVE: usize = 32;

fn main() -> ExitCode {
    let config = Config::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match wschat::code_pages::map_all() {
        Ok(bytes) => debug!("{} KiB of code mapped at start", bytes / 1024),
        Err(e) => info!("the code was not mapped at start ({e}): it is faulted in as first run"),
    }

    let mut config = config;
    if config.history_bytes > config.max_outbox {
        warn!(
            "--history-bytes {} lowered to --max-outbox {}: a newcomer's history replay must fit its queue",
            config.history_bytes, config.max_outbox
        );
        config.history_bytes = config.max_outbox;
    }
    let max_connections = config.max_connections.unwrap_or_else(|| {
        let splicing = if config.splice_min_size > 0 {
            SPLICE_DESCRIPTORS
        } else {
            0
        };
        default_max_connections(DESCRIPTOR_RESERVE + splicing)
    });
    let tls = match (&config.tls_listen, &config.tls_cert, &config.tls_key) {
        (Some(addr), Some(cert), Some(key)) => match TlsIdentity::load(cert, key) {
            Ok(identity) => Some((*addr, identity)),
            Err(e) => {
                error!("TLS: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    if config.listen.0.is_none() && tls.is_none() {
        error!("--listen none needs --tls-listen, --tls-cert and --tls-key: nothing to listen on");
        return ExitCode::FAILURE;
    }
    let server_config = ServerConfig {
        listen: config.listen.0,
        tls,
        settings: config.settings(),
        timing: config.timing(),
        flood: config.flood(),
        max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        reuse_port: config.reuse_port,
        splice_min_size: config.splice_min_size,
    };
    info!(
        "{} mode, max {max_connections} connections, max message {} bytes",
        if config.echo { "echo" } else { "chat" },
        config.max_message_size
    );
    if config.echo {
        let echo = Echo {
            protocols: config.protocols.clone(),
        };
        run(&config, server_config, echo)
    } else {
        let chat_config = match config.chat() {
            Ok(chat_config) => chat_config,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if chat_config.verifier.is_some() {
            info!(
                "verified users: tokens checked (HS256){}",
                if config.require_auth {
                    ", anonymous upgrades refused"
                } else {
                    ""
                }
            );
        }
        if chat_config.api_key.is_some() {
            info!("HTTP API on (/api/...), key from --api-key-file");
        }
        let chat = match &config.redis {
            Some(url) => match clustered_chat(&config, url, chat_config) {
                Some(chat) => chat,
                None => return ExitCode::FAILURE,
            },
            None => Chat::new(chat_config),
        };
        run(&config, server_config, chat)
    }
}

/// The chat as one node of many, joined through the Redis at `url`. The
/// address is resolved once, now (a name that does not resolve is a
/// clear error at start); Redis not answering is not: the node starts
/// degraded and its links keep retrying.
fn clustered_chat(config: &Config, url: &RedisUrl, chat: ChatConfig) -> Option<Chat> {
    let addr = match url.authority().to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            error!("--redis {url}: cannot resolve {}", url.authority());
            return None;
        }
    };
    let node = config.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        let port = config
            .listen
            .0
            .or(config.tls_listen)
            .map_or(0, |a| a.port());
        default_node_id(host.trim(), port, config.reuse_port, std::process::id())
    });
    let clock = Clock::read();
    let bus = RedisBus::new(
        url,
        addr,
        &node,
        clock.unix_ms,
        DEFAULT_HISTORY_MAXLEN.max(u64::try_from(config.history).unwrap_or(u64::MAX)),
        u64::try_from(config.history).unwrap_or(u64::MAX),
        clock.now,
    );
    info!("cluster mode: node {node}, Redis {url} ({addr})");
    Some(Chat::clustered(chat, Box::new(bus), &node))
}

/// Binds, announces the bound addresses and runs the loop with `service`.
fn run(config: &Config, server_config: ServerConfig, service: impl Service) -> ExitCode {
    let mut server = match Server::bind(server_config, service) {
        Ok(server) => server,
        Err(e) => {
            let addrs: Vec<String> = config
                .listen
                .0
                .iter()
                .chain(&config.tls_listen)
                .map(|a| a.to_string())
                .collect();
            error!("cannot listen on {}: {e}", addrs.join(" and "));
            return ExitCode::FAILURE;
        }
    };
    match server.local_addrs() {
        Ok(addrs) => {
            let mut stdout = std::io::stdout().lock();
            // The TLS listener, if any, is the last.
            let tls_at = config.tls_listen.map(|_| addrs.len().saturating_sub(1));
            for (i, addr) in addrs.into_iter().enumerate() {
                // Scripts and tests wait for this line to learn the port.
                let tls = if Some(i) == tls_at { " (TLS)" } else { "" };
                let _ = writeln!(stdout, "wschat listening{tls} on {addr}");
            }
            let _ = stdout.flush();
        }
        Err(e) => warn!("local address: {e}"),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the descriptor limit to its hard maximum and derives how many
/// connections fit under it with `reserve` kept back.
fn default_max_connections(reserve: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!("cannot raise the descriptor limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(1)
}
