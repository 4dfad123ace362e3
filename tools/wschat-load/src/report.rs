//! The results of a run, printed for people or as one JSON object.

use std::fmt::Write;

use crate::client::Errors;
use crate::tracker::Counts;

/// Latency percentiles in microseconds; `None` without samples.
#[derive(Default)]
pub struct Latency {
    pub samples: u64,
    pub min_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub mean_us: Option<f64>,
}

/// What `/proc` said about the server; each sample may be missing.
#[derive(Default)]
pub struct Server {
    /// CPU seconds over the measured window (load) or over connect and
    /// settle (idle).
    pub cpu_s: Option<f64>,
    pub rss_kib_before: Option<u64>,
    pub rss_kib_after: Option<u64>,
    pub rss_kib_end: Option<u64>,
    /// The highest resident memory the server ever had, as of the end of
    /// the run (its `VmHWM`).
    pub rss_kib_peak: Option<u64>,
}

pub struct Report {
    pub label: String,
    pub url: String,
    pub mode: String,
    pub idle: bool,
    pub clients: usize,
    /// Handshakes that completed.
    pub connected: u64,
    /// Connections open when the server's RSS was sampled after connect.
    pub open_at_sample: usize,
    pub senders: usize,
    pub payload: usize,
    pub connect_failures: u64,
    pub connect_s: f64,
    pub measure_s: f64,
    pub counts: Counts,
    pub lost: u64,
    /// Open connections the server closed or dropped before the end.
    pub disconnects: u64,
    /// Of those, the ones closed with a Close frame from the server:
    /// (code, clients), by code; 1005 for a Close without a code.
    pub closes: Vec<(u16, u64)>,
    /// Open-loop sends skipped: sender gone, socket backlog, or the tool
    /// falling behind its schedule.
    pub unsent: u64,
    pub errors: Errors,
    pub latency: Latency,
    pub server: Option<Server>,
    /// The tool's CPU over the same window as `server.cpu_s`.
    pub tool_cpu_s: f64,
    /// Seconds that window lasted.
    pub cpu_window_s: f64,
    pub tool_cpu_total_s: f64,
    /// The global deadline cut the run short.
    pub deadline_hit: bool,
    /// `wss://`.
    pub tls: bool,
    /// `--deflate` was asked.
    pub deflate: bool,
    /// Handshakes that agreed permessage-deflate.
    pub deflate_agreed: u64,
    /// Bytes read from the sockets in the measured window (TLS records,
    /// frame headers, compressed payloads: what crossed the wire).
    pub wire_bytes: Option<u64>,
    /// Compressed payloads inflated, and those answered by the cache of
    /// repeats (see `deflate.rs`).
    pub inflated: u64,
    pub inflate_cache_hits: u64,
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report {
    pub fn handshakes_per_sec(&self) -> f64 {
        per_sec(self.connected, self.connect_s)
    }

    pub fn deliveries_per_sec(&self) -> f64 {
        per_sec(self.counts.delivered_measured, self.measure_s)
    }

    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.counts.bytes_measured, self.measure_s) / 1e6
    }

    /// Clients the server closed with a Close frame.
    pub fn closed_by_server(&self) -> u64 {
        self.closes.iter().map(|&(_, n)| n).sum()
    }

    /// Clients closed with `code`.
    pub fn closed_with(&self, code: u16) -> u64 {
        self.closes
            .iter()
            .find(|&&(c, _)| c == code)
            .map_or(0, |&(_, n)| n)
    }

    /// Bytes received per message delivered in the measured window.
    pub fn wire_bytes_per_delivery(&self) -> Option<f64> {
        let deliveries = self.counts.delivered_measured;
        let bytes = self.wire_bytes?;
        (deliveries > 0).then(|| bytes as f64 / deliveries as f64)
    }

    pub fn server_cpu_s(&self) -> Option<f64> {
        self.server.as_ref()?.cpu_s
    }

    pub fn server_cpu_per_million(&self) -> Option<f64> {
        let deliveries = self.counts.delivered_measured;
        if deliveries == 0 {
            return None;
        }
        Some(self.server_cpu_s()? / (deliveries as f64 / 1e6))
    }

    /// Server RSS growth per connection, before connect to after settle.
    pub fn rss_kib_per_conn(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        let grown = server.rss_kib_after? as f64 - server.rss_kib_before? as f64;
        (self.open_at_sample > 0).then(|| grown / self.open_at_sample as f64)
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.label)
        };
        let _ = writeln!(s, "{label}{} — {}", self.url, self.mode);
        let e = &self.errors;
        let _ = writeln!(
            s,
            "connect   {}/{} clients in {:.3} s: {:.0} handshakes/s; {} failed (connect {}, handshake {}), {} dropped later (protocol {}, io {})",
            self.connected,
            self.clients,
            self.connect_s,
            self.handshakes_per_sec(),
            self.connect_failures,
            e.connect,
            e.handshake,
            self.disconnects,
            e.protocol,
            e.io,
        );
        if !self.closes.is_empty() {
            let by_code: Vec<String> = self
                .closes
                .iter()
                .map(|(code, n)| format!("{n} × {code}"))
                .collect();
            let _ = writeln!(
                s,
                "closes    {} clients closed by the server: {}",
                self.closed_by_server(),
                by_code.join(", ")
            );
        }
        let c = &self.counts;
        let _ = writeln!(
            s,
            "chatter   {} joins, {} leaves, {} other texts seen",
            c.joins, c.leaves, c.other
        );
        if !self.idle {
            let _ = writeln!(
                s,
                "traffic   {} senders, {} B: sent {} msgs in {:.2} s window ({} total, {} unsent), {} deliveries = {:.0}/s, {:.2} MB/s",
                self.senders,
                self.payload,
                c.sent_measured,
                self.measure_s,
                c.sent,
                self.unsent,
                c.delivered_measured,
                self.deliveries_per_sec(),
                self.mb_per_sec(),
            );
            let _ = writeln!(
                s,
                "loss      {} lost of {} expected, {} extra, {} window timeouts",
                self.lost, c.expected, c.extra, c.timed_out
            );
            let _ = write!(
                s,
                "wire      {} bytes received in the window",
                self.wire_bytes.map_or("-".to_string(), |b| b.to_string())
            );
            if let Some(per) = self.wire_bytes_per_delivery() {
                let _ = write!(s, " = {per:.1} per delivery");
            }
            let _ = write!(s, "{}", if self.tls { "; TLS" } else { "" });
            if self.deflate {
                let _ = write!(
                    s,
                    "; permessage-deflate on {} connections, {} payloads inflated, {} repeats from the cache",
                    self.deflate_agreed, self.inflated, self.inflate_cache_hits
                );
            }
            s.push('\n');
            let l = &self.latency;
            let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "latency   µs: min {}  p50 {}  p99 {}  p99.9 {}  max {}  mean {}  ({} samples)",
                us(l.min_us),
                us(l.p50_us),
                us(l.p99_us),
                us(l.p999_us),
                us(l.max_us),
                us(l.mean_us),
                l.samples
            );
        }
        if let Some(server) = &self.server {
            let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let window = if self.idle {
                "connect+settle"
            } else {
                "window"
            };
            let _ = write!(
                s,
                "server    cpu {} s in {window}",
                server.cpu_s.map_or("-".to_string(), |v| format!("{v:.3}"))
            );
            if let Some(per_million) = self.server_cpu_per_million() {
                let _ = write!(s, " ({per_million:.3} s per million deliveries)");
            }
            let _ = write!(
                s,
                "; RSS KiB before {} / after connect {} / end {} / peak {}",
                kib(server.rss_kib_before),
                kib(server.rss_kib_after),
                kib(server.rss_kib_end),
                kib(server.rss_kib_peak)
            );
            if let Some(per_conn) = self.rss_kib_per_conn() {
                let _ = write!(s, " = {per_conn:.2} KiB per connection");
            }
            s.push('\n');
        }
        let window = if self.idle {
            "connect+settle"
        } else {
            "window"
        };
        let busy = if self.cpu_window_s > 0.0 {
            100.0 * self.tool_cpu_s / self.cpu_window_s
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "tool      cpu {:.3} s in {window} ({busy:.0}% of one core{}), {:.3} s total",
            self.tool_cpu_s,
            if busy > 90.0 {
                " — the tool may be the bottleneck"
            } else {
                ""
            },
            self.tool_cpu_total_s
        );
        if self.deadline_hit {
            s.push_str("note      the global deadline cut the run short\n");
        }
        s
    }

    pub fn json(&self) -> String {
        let mut j = Json::default();
        let c = &self.counts;
        let l = &self.latency;
        let server = self.server.as_ref();
        j.str("label", &self.label);
        j.str("url", &self.url);
        j.str("mode", &self.mode);
        j.int("clients", self.clients as u64);
        j.int("connected", self.connected);
        j.int("senders", self.senders as u64);
        j.int("payload", self.payload as u64);
        j.num("duration_s", Some(self.measure_s), 3);
        j.int("sent", c.sent_measured);
        j.int("deliveries", c.delivered_measured);
        j.num("deliveries_per_sec", Some(self.deliveries_per_sec()), 1);
        j.num("mb_per_sec", Some(self.mb_per_sec()), 3);
        j.int("lost", self.lost);
        j.int("expected", c.expected);
        j.int("extra", c.extra);
        j.int("unsent", self.unsent);
        j.int("disconnects", self.disconnects);
        j.int("closed_by_server", self.closed_by_server());
        j.int("closed_1008", self.closed_with(1008));
        let mut closes = Json::default();
        for (code, n) in &self.closes {
            closes.int(&code.to_string(), *n);
        }
        j.raw("closes", &closes.finish());
        j.int("latency_samples", l.samples);
        j.num("min_us", l.min_us, 1);
        j.num("p50_us", l.p50_us, 1);
        j.num("p99_us", l.p99_us, 1);
        j.num("p999_us", l.p999_us, 1);
        j.num("max_us", l.max_us, 1);
        j.num("mean_us", l.mean_us, 1);
        j.num("connect_s", Some(self.connect_s), 3);
        j.num("handshakes_per_sec", Some(self.handshakes_per_sec()), 1);
        j.int("connect_failures", self.connect_failures);
        j.num("server_cpu_s", self.server_cpu_s(), 3);
        j.num("server_cpu_s_per_million", self.server_cpu_per_million(), 3);
        j.opt_int(
            "server_rss_kib_before",
            server.and_then(|s| s.rss_kib_before),
        );
        j.opt_int("server_rss_kib_after", server.and_then(|s| s.rss_kib_after));
        j.opt_int("server_rss_kib_end", server.and_then(|s| s.rss_kib_end));
        j.opt_int("server_rss_kib_peak", server.and_then(|s| s.rss_kib_peak));
        j.num("rss_kib_per_conn", self.rss_kib_per_conn(), 3);
        j.num("tool_cpu_s", Some(self.tool_cpu_s), 3);
        j.num("cpu_window_s", Some(self.cpu_window_s), 3);
        j.num("tool_cpu_total_s", Some(self.tool_cpu_total_s), 3);
        j.bool("deadline_hit", self.deadline_hit);
        j.bool("tls", self.tls);
        j.bool("deflate", self.deflate);
        j.int("deflate_agreed", self.deflate_agreed);
        j.opt_int("wire_bytes", self.wire_bytes);
        j.num("wire_bytes_per_delivery", self.wire_bytes_per_delivery(), 1);
        j.int("inflated", self.inflated);
        j.int("inflate_cache_hits", self.inflate_cache_hits);
        j.finish()
    }
}

/// A one-line JSON object written field by field.
#[derive(Default)]
struct Json {
    out: String,
}

impl Json {
    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_string(&mut self.out, value);
    }

    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn opt_int(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    fn num(&mut self, key: &str, value: Option<f64>, decimals: usize) {
        match value {
            Some(v) if v.is_finite() => {
                self.key(key);
                let _ = write!(self.out, "{v:.decimals$}");
            }
            _ => self.null(key),
        }
    }

    /// `value` must be JSON already.
    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.push_str(value);
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            label: "S1 \"quoted\"\n".into(),
            url: "ws://127.0.0.1:9000/".into(),
            mode: "open loop".into(),
            idle: false,
            clients: 100,
            connected: 100,
            open_at_sample: 100,
            senders: 10,
            payload: 64,
            connect_failures: 0,
            connect_s: 0.5,
            measure_s: 10.0,
            counts: Counts {
                sent_measured: 10_000,
                delivered_measured: 990_000,
                bytes_measured: 75_240_000,
                ..Counts::default()
            },
            lost: 0,
            disconnects: 20,
            closes: vec![(1001, 2), (1008, 18)],
            unsent: 0,
            errors: Errors::default(),
            latency: Latency {
                samples: 990_000,
                p50_us: Some(120.0),
                ..Latency::default()
            },
            server: Some(Server {
                cpu_s: Some(2.0),
                rss_kib_before: Some(10_000),
                rss_kib_after: Some(12_000),
                rss_kib_end: None,
                rss_kib_peak: Some(70_000),
            }),
            tool_cpu_s: 3.0,
            cpu_window_s: 10.0,
            tool_cpu_total_s: 4.0,
            deadline_hit: false,
            tls: true,
            deflate: true,
            deflate_agreed: 100,
            wire_bytes: Some(396_000_000),
            inflated: 10_000,
            inflate_cache_hits: 980_000,
        }
    }

    #[test]
    fn derived_numbers() {
        let r = sample();
        assert_eq!(r.handshakes_per_sec(), 200.0);
        assert_eq!(r.deliveries_per_sec(), 99_000.0);
        assert!((r.mb_per_sec() - 7.524).abs() < 1e-9);
        assert!((r.server_cpu_per_million().unwrap() - 2.0 / 0.99).abs() < 1e-9);
        assert_eq!(r.rss_kib_per_conn(), Some(20.0));
        assert_eq!(r.wire_bytes_per_delivery(), Some(400.0));
        let mut none = sample();
        none.counts.delivered_measured = 0;
        assert_eq!(none.wire_bytes_per_delivery(), None);
    }

    #[test]
    fn json_is_one_escaped_object_with_nulls() {
        let json = sample().json();
        assert!(json.starts_with("{\"label\":\"S1 \\\"quoted\\\"\\n\","));
        assert!(json.contains("\"deadline_hit\":false,"));
        assert!(json.ends_with("\"inflate_cache_hits\":980000}"));
        assert!(!json.contains('\n'));
        for field in [
            "\"deliveries_per_sec\":99000.0",
            "\"p50_us\":120.0",
            "\"p99_us\":null",
            "\"server_rss_kib_end\":null",
            "\"rss_kib_per_conn\":20.000",
            "\"handshakes_per_sec\":200.0",
            "\"closed_by_server\":20,\"closed_1008\":18,\"closes\":{\"1001\":2,\"1008\":18},",
            "\"server_rss_kib_peak\":70000,",
            "\"tls\":true,\"deflate\":true,\"deflate_agreed\":100,\"wire_bytes\":396000000,",
            "\"wire_bytes_per_delivery\":400.0,",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
    }

    #[test]
    fn human_summary_has_closes_by_code_and_the_peak() {
        let r = sample();
        assert_eq!((r.closed_by_server(), r.closed_with(1008)), (20, 18));
        let human = r.human();
        assert!(human.contains("closes    20 clients closed by the server: 2 × 1001, 18 × 1008\n"));
        assert!(human.contains("/ end - / peak 70000"), "{human}");
        let mut quiet = sample();
        quiet.closes.clear();
        assert!(!quiet.human().contains("closes"));
        assert!(quiet
            .json()
            .contains("\"closed_by_server\":0,\"closed_1008\":0,\"closes\":{},"));
    }

    #[test]
    fn no_server_means_null_server_fields() {
        let mut r = sample();
        r.server = None;
        let json = r.json();
        assert!(json.contains("\"server_cpu_s\":null"));
        assert!(json.contains("\"rss_kib_per_conn\":null"));
        assert!(json.contains("\"server_rss_kib_peak\":null"));
        assert!(!r.human().contains("server "));
    }
}
