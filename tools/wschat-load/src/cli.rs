//! Command-line flags and their translation into a checked [`Config`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::client::Target;
use crate::marker;

/// Above this many clients, connections are spread over several
/// loopback source addresses unless `--source-ips` says otherwise: one
/// source address has about 28k ephemeral ports per destination.
const CLIENTS_PER_SOURCE_IP: usize = 20_000;

#[derive(Parser, Debug)]
#[command(
    name = "wschat-load",
    version,
    about = "Load generator for WebSocket chat servers (wschat and its peers)",
    long_about = "Load generator for WebSocket chat servers (wschat and its peers).\n\n\
        Connects N clients; K of them send text messages carrying a timestamped marker \
        (~L<sender>:<seq>:<ns>~) which every other client must receive, with whatever \
        prefix the server adds. Measures deliveries/s, latency percentiles, lost deliveries \
        and connect rate, and, given --server-pid, the server's CPU time and memory. \
        One thread, one poll loop.\n\n\
        Examples (the benchmark scenarios):\n  \
        S1 latency     wschat-load --url ws://127.0.0.1:9000/ -c 100 -s 10 --rate 1000\n  \
        S2W saturation wschat-load --url ws://127.0.0.1:9000/ -c 100 -s 10 --window 16 --server-pid PID\n  \
        S3 fan-out     wschat-load --url ws://127.0.0.1:9000/ -c 1000 -s 2 --rate 200\n  \
        S4 idle        wschat-load --url ws://127.0.0.1:9000/ -c 10000 --idle --server-pid PID\n  \
        S5 large       wschat-load --url ws://127.0.0.1:9000/ -c 20 -s 2 --window 4 --payload 65536\n  \
        S5 open loop   wschat-load --url ws://127.0.0.1:9000/ -c 20 -s 2 --rate 0 --payload 65536 --server-pid PID\n  \
        S2W over TLS   wschat-load --url wss://127.0.0.1:9443/ --ca ca.pem -c 100 -s 10 --window 16\n  \
        C1 deflate     wschat-load --url ws://127.0.0.1:9000/ -c 100 -s 10 --window 16 --payload 1024 --deflate --filler chat"
)]
pub struct Args {
    /// Server URL: ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (with --ca),
    /// where HOST is an IP address or localhost. Repeat it to spread the
    /// clients round-robin over several servers (e.g. the nodes of a
    /// cluster; senders too).
    #[arg(long, required = true)]
    pub url: Vec<String>,

    /// wss://: trust the CA certificates in this PEM file (and only them).
    #[arg(long, value_name = "PATH")]
    pub ca: Option<PathBuf>,

    /// Offer permessage-deflate (`permessage-deflate; client_max_window_bits`,
    /// as browsers do), require the server to agree (a connection it answers
    /// without the extension fails, and so does the run), send every message
    /// compressed and inflate what arrives compressed.
    #[arg(long)]
    pub deflate: bool,

    /// What pads each message after its marker: `abc` (`abc…z` repeating,
    /// which compresses to almost nothing) or `chat` (chat-like words, which
    /// compress like chat text; use it with --deflate).
    #[arg(long, value_enum, default_value_t = Filler::Abc)]
    pub filler: Filler,

    /// Number of clients to connect.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 100)]
    pub clients: usize,

    /// How many clients send (the first ones created); all clients receive.
    #[arg(short = 's', long, value_name = "K", default_value_t = 10)]
    pub senders: usize,

    /// Open loop: total messages per second over all senders, spread evenly.
    /// 0: every sender sends as fast as its socket takes the messages, never
    /// waiting for deliveries (what the server cannot pass on, it must drop
    /// or buffer: see lost, closes and peak RSS).
    #[arg(long, value_name = "MSG_PER_SEC", conflicts_with_all = ["window", "idle"])]
    pub rate: Option<f64>,

    /// Closed loop: each sender keeps at most W messages not yet received by
    /// every recipient, sending the next as soon as one completes.
    #[arg(long, value_name = "W", conflicts_with = "idle")]
    pub window: Option<u32>,

    /// Message size in bytes (marker plus ASCII filler; at least the marker).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload: usize,

    /// Seconds of measurement (in --idle: seconds to hold the connections).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of sending before measuring; those messages are not recorded.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,

    /// Seconds to wait after sending stops for messages still in flight;
    /// what has not arrived by then is lost (counted over every message
    /// sent, warm-up included).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub drain: f64,

    /// After connecting, wait until this many seconds pass without join
    /// announcements (or other non-load text) before sending.
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    pub settle: f64,

    /// Seconds allowed for connecting all clients; the same again bounds settling.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub connect_timeout: f64,

    /// At most this many TCP connects and handshakes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Closed loop: a message undelivered after this many seconds frees its
    /// window slot, so a loss cannot stall its sender (late arrivals still count).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub msg_timeout: f64,

    /// Bind clients round-robin to 127.0.0.1 ..= 127.0.0.N before connecting.
    /// Default: 1 address per 20,000 clients above 20,000 (loopback targets only).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: Option<u8>,

    /// Server process id: report its CPU seconds and RSS from /proc.
    /// Repeat it to sum several processes (cluster nodes, redis-server).
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,

    /// Idle mode: connect, settle, sample server RSS, hold for --duration, close.
    #[arg(long)]
    pub idle: bool,

    /// Print one JSON object on stdout (the human summary goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Scenario label copied into the output.
    #[arg(long, default_value = "")]
    pub label: String,

    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Filler {
    Abc,
    Chat,
}

impl Filler {
    /// `len` bytes of this filler.
    pub fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Filler::Abc => (0..len).map(|i| b'a' + (i % 26) as u8).collect(),
            Filler::Chat => marker::chat_text(len),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Idle,
    /// Messages per second over all senders.
    Rate(f64),
    /// Open loop without a schedule: each sender sends whenever its socket
    /// has taken the previous message whole (`--rate 0`).
    Flood,
    /// Undelivered messages allowed per sender.
    Window(u32),
}

pub struct Config {
    /// Client `i` connects to `targets[i % targets.len()]`.
    pub targets: Vec<Target>,
    pub url: String,
    pub clients: usize,
    pub senders: usize,
    pub load: Load,
    pub payload: usize,
    pub filler: Filler,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub settle: Duration,
    pub connect_timeout: Duration,
    pub connect_concurrency: usize,
    pub msg_timeout: Duration,
    /// Empty: let the kernel choose the source address.
    pub source_ips: Vec<Ipv4Addr>,
    /// Summed in the report (empty: no server measurements).
    pub server_pid: Vec<u32>,
    pub json: bool,
    pub label: String,
    pub quiet: bool,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

impl Args {
    pub fn into_config(self) -> Result<Config, String> {
        let mut targets = Vec::with_capacity(self.url.len());
        for url in &self.url {
            let (mut target, secure) = parse_url(url)?;
            target.deflate = self.deflate;
            match (secure, &self.ca) {
                (true, Some(ca)) => {
                    let host = target.host_name().to_string();
                    target.tls = Some(crate::tls::client(ca, &host)?);
                }
                (true, None) => return Err("wss:// needs --ca PATH (the CA to trust)".into()),
                (false, Some(_)) => return Err("--ca is for wss:// URLs".into()),
                (false, None) => {}
            }
            targets.push(target);
        }
        let Some(addr) = targets.first().map(|t| t.addr) else {
            return Err("give --url".into());
        };
        let load = match (self.idle, self.rate, self.window) {
            (true, _, _) => Load::Idle,
            (false, Some(rate), None) if rate > 0.0 && rate.is_finite() => Load::Rate(rate),
            (false, Some(0.0), None) => Load::Flood,
            (false, Some(_), None) => {
                return Err("--rate must be positive, or 0 for as fast as possible".into())
            }
            (false, None, Some(0)) => return Err("--window must be at least 1".into()),
            (false, None, Some(window)) => Load::Window(window),
            _ => return Err("give --rate (open loop), --window (closed loop) or --idle".into()),
        };
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if load != Load::Idle && (self.senders == 0 || self.clients < 2) {
            return Err("a load run needs --senders >= 1 and --clients >= 2".into());
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        let loopback = addr.ip().is_loopback() && addr.is_ipv4();
        let source_count = match self.source_ips {
            Some(n) if !addr.is_ipv4() => {
                return Err(format!("--source-ips {n} needs an IPv4 target"));
            }
            Some(n) => usize::from(n),
            None if loopback && self.clients > CLIENTS_PER_SOURCE_IP => {
                self.clients.div_ceil(CLIENTS_PER_SOURCE_IP).min(254)
            }
            None => 0,
        };
        let source_ips = (1..=source_count as u8)
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect();
        Ok(Config {
            targets,
            url: self.url.join(" "),
            clients: self.clients,
            senders: if load == Load::Idle {
                0
            } else {
                self.senders.min(self.clients)
            },
            load,
            payload: self.payload,
            filler: self.filler,
            duration: seconds("duration", self.duration)?,
            warmup: seconds("warmup", self.warmup)?,
            drain: seconds("drain", self.drain)?,
            settle: seconds("settle", self.settle)?,
            connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
            connect_concurrency: self.connect_concurrency,
            msg_timeout: seconds("msg-timeout", self.msg_timeout)?,
            source_ips,
            server_pid: self.server_pid,
            json: self.json,
            label: self.label,
            quiet: self.quiet,
        })
    }
}

/// Parses `ws://HOST[:PORT][/PATH]` or `wss://…` where HOST is an IP
/// address (IPv6 in brackets) or `localhost`; `true` for `wss://`.
pub fn parse_url(url: &str) -> Result<(Target, bool), String> {
    let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed '[' in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url}: bad port {p:?}"))?,
        None if secure => 443,
        None => 80,
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .map_err(|_| format!("{url}: host must be an IP address or localhost"))?
    };
    Ok((
        Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            path,
            tls: None,
            deflate: false,
        },
        secure,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["wschat-load", "--url", "ws://127.0.0.1:9000/"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("valid flags")
    }

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:9000/").unwrap().0;
        assert_eq!(
            (t.addr, t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:9000".parse().unwrap(), "127.0.0.1:9000", "/")
        );
        let t = parse_url("ws://localhost:81/chat?room=1#x").unwrap().0;
        assert_eq!((t.addr.port(), t.path.as_str()), (81, "/chat?room=1"));
        let t = parse_url("ws://[::1]:9000").unwrap().0;
        assert_eq!(
            (t.addr, t.path.as_str()),
            ("[::1]:9000".parse().unwrap(), "/")
        );
        let t = parse_url("ws://10.0.0.1?x").unwrap().0;
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/?x"));
        let (t, secure) = parse_url("wss://127.0.0.1/").unwrap();
        assert_eq!(
            (t.addr.port(), secure, t.host_name()),
            (443, true, "127.0.0.1")
        );
        let (t, secure) = parse_url("wss://[::1]:9443/x").unwrap();
        assert_eq!((t.addr.port(), secure, t.host_name()), (9443, true, "::1"));
        assert!(!parse_url("ws://localhost/").unwrap().1);
        for bad in [
            "wss//127.0.0.1/",
            "http://127.0.0.1/",
            "ws://example.com/",
            "ws://127.0.0.1:x/",
            "ws://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_mode_is_required_and_exclusive() {
        assert!(args(&[]).into_config().is_err());
        assert_eq!(
            args(&["--rate", "1000"]).into_config().unwrap().load,
            Load::Rate(1000.0)
        );
        assert_eq!(
            args(&["--window", "16"]).into_config().unwrap().load,
            Load::Window(16)
        );
        assert_eq!(args(&["--idle"]).into_config().unwrap().load, Load::Idle);
        assert_eq!(
            args(&["--rate", "0"]).into_config().unwrap().load,
            Load::Flood
        );
        assert!(args(&["--rate", "NaN"]).into_config().is_err());
        assert!(args(&["--window", "0"]).into_config().is_err());
        assert!(args(&["--rate=-1"]).into_config().is_err());
        let argv = [
            "wschat-load",
            "--url",
            "ws://127.0.0.1:1/",
            "--rate",
            "1",
            "--window",
            "1",
        ];
        assert!(Args::try_parse_from(argv).is_err());
    }

    #[test]
    fn source_addresses() {
        let c = args(&["--idle", "-c", "20000"]).into_config().unwrap();
        assert!(c.source_ips.is_empty());
        let c = args(&["--idle", "-c", "50000"]).into_config().unwrap();
        assert_eq!(c.source_ips.len(), 3);
        assert_eq!(c.source_ips[2], Ipv4Addr::new(127, 0, 0, 3));
        let c = args(&["--idle", "--source-ips", "4"])
            .into_config()
            .unwrap();
        assert_eq!(c.source_ips.len(), 4);
        assert!(Args::try_parse_from([
            "wschat-load",
            "--url",
            "ws://127.0.0.1:1/",
            "--source-ips",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn wss_needs_a_ca_and_a_ca_needs_wss() {
        let argv = |url: &'static str, extra: &[&'static str]| {
            let mut argv = vec!["wschat-load", "--url", url, "--idle"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().into_config()
        };
        assert!(argv("wss://127.0.0.1:1/", &[]).is_err());
        assert!(argv("ws://127.0.0.1:1/", &["--ca", "/nonexistent.pem"]).is_err());
        assert!(argv("wss://127.0.0.1:1/", &["--ca", "/nonexistent.pem"]).is_err());
        let c = argv("ws://127.0.0.1:1/", &["--deflate", "--filler", "chat"]).unwrap();
        assert!(c.targets[0].deflate && c.targets[0].tls.is_none());
        assert_eq!(c.filler, Filler::Chat);
        assert_eq!(args(&["--idle"]).into_config().unwrap().filler, Filler::Abc);
    }

    #[test]
    fn fillers() {
        assert_eq!(Filler::Abc.bytes(28), b"abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(Filler::Chat.bytes(300).len(), 300);
    }

    #[test]
    fn senders_are_capped_by_clients() {
        let c = args(&["--rate", "1", "-c", "3", "-s", "10"])
            .into_config()
            .unwrap();
        assert_eq!(c.senders, 3);
        assert!(args(&["--rate", "1", "-c", "1"]).into_config().is_err());
    }
}
