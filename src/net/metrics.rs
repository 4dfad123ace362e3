//! Counters an operator scrapes from `GET /metrics`, in the Prometheus
//! text exposition format (version 0.0.4).
//!
//! The loop bumps plain integers (one thread: no atomics); gauges that are
//! sums over connections are computed when scraped, so the hot path pays
//! nothing for them.

use std::fmt::Write as _;

/// Counters kept by the event loop.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub connections_accepted: u64,
    pub websockets_opened: u64,
    /// Handshake refusals by reason, in first-seen order.
    pub refused: Vec<(&'static str, u64)>,
    pub http_requests: u64,
    pub messages_in: u64,
    /// Of those, messages that came compressed (RSV1, permessage-deflate).
    pub messages_in_compressed: u64,
    pub bytes_in: u64,
    /// Frames encoded for delivery (a broadcast counts once).
    pub messages_out: u64,
    /// Frames queued to recipients (a broadcast counts once per recipient).
    pub deliveries: u64,
    /// Of those, frames sent compressed (RSV1, permessage-deflate).
    pub deliveries_compressed: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    pub slow_consumer_closes: u64,
    /// Times a sender was paused by backpressure.
    pub senders_paused: u64,
    pub flood_drops: u64,
    pub flood_closes: u64,
    pub idle_timeouts: u64,
}

/// Values computed at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// TCP connections held, in any phase.
    pub connections: usize,
    /// Connections in the WebSocket open phase.
    pub open: usize,
    /// Bytes waiting in all outboxes together.
    pub queued_bytes: usize,
    /// Senders paused by backpressure.
    pub paused: usize,
    /// Of the bytes sent, those spliced from shared pages (a counter the
    /// splicer keeps).
    pub spliced_bytes: u64,
}

impl Metrics {
    pub fn refusal(&mut self, reason: &'static str) {
        match self.refused.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((reason, 1)),
        }
    }

    /// Renders everything the loop knows; the application appends its own.
    pub fn render(&self, gauges: Gauges, out: &mut String) {
        gauge(
            out,
            "wschat_connections",
            "TCP connections held, in any phase.",
            gauges.connections,
        );
        gauge(
            out,
            "wschat_connections_open",
            "WebSocket connections open.",
            gauges.open,
        );
        gauge(
            out,
            "wschat_outbox_bytes",
            "Bytes queued for sending, all connections together.",
            gauges.queued_bytes,
        );
        counter(
            out,
            "wschat_connections_accepted_total",
            "TCP connections accepted.",
            self.connections_accepted,
        );
        counter(
            out,
            "wschat_websockets_opened_total",
            "WebSocket handshakes accepted.",
            self.websockets_opened,
        );
        header(
            out,
            "wschat_handshakes_refused_total",
            "Handshakes refused, by reason.",
            "counter",
        );
        for (reason, n) in &self.refused {
            let _ = writeln!(
                out,
                "wschat_handshakes_refused_total{{reason=\"{}\"}} {n}",
                escape_label(reason)
            );
        }
        counter(
            out,
            "wschat_http_requests_total",
            "Plain HTTP requests answered.",
            self.http_requests,
        );
        counter(
            out,
            "wschat_messages_received_total",
            "WebSocket messages received.",
            self.messages_in,
        );
        counter(
            out,
            "wschat_messages_received_compressed_total",
            "WebSocket messages received compressed (permessage-deflate, RSV1).",
            self.messages_in_compressed,
        );
        counter(
            out,
            "wschat_bytes_received_total",
            "Payload bytes of messages received.",
            self.bytes_in,
        );
        counter(
            out,
            "wschat_messages_sent_total",
            "Messages encoded for sending (once per broadcast).",
            self.messages_out,
        );
        counter(
            out,
            "wschat_deliveries_total",
            "Messages queued to a recipient.",
            self.deliveries,
        );
        counter(
            out,
            "wschat_deliveries_compressed_total",
            "Messages queued to a recipient compressed (permessage-deflate, RSV1).",
            self.deliveries_compressed,
        );
        counter(
            out,
            "wschat_bytes_sent_total",
            "Bytes written to sockets.",
            self.bytes_out,
        );
        counter(
            out,
            "wschat_bytes_spliced_total",
            "Of the bytes sent, those spliced from kernel pages shared by every recipient (large frames).",
            gauges.spliced_bytes,
        );
        counter(
            out,
            "wschat_slow_consumer_disconnects_total",
            "Connections closed for not reading (1008).",
            self.slow_consumer_closes,
        );
        counter(
            out,
            "wschat_senders_paused_total",
            "Times a sender stopped being read until its recipients drained (backpressure).",
            self.senders_paused,
        );
        gauge(
            out,
            "wschat_senders_paused",
            "Senders not being read right now (backpressure).",
            gauges.paused,
        );
        counter(
            out,
            "wschat_flood_dropped_messages_total",
            "Messages dropped by flood control.",
            self.flood_drops,
        );
        counter(
            out,
            "wschat_flood_disconnects_total",
            "Connections closed by flood control (1008).",
            self.flood_closes,
        );
        counter(
            out,
            "wschat_idle_disconnects_total",
            "Connections dropped for not answering a ping.",
            self.idle_timeouts,
        );
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one counter with its help and type lines.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// Writes one gauge with its help and type lines.
pub fn gauge(out: &mut String, name: &str, help: &str, value: usize) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics::default();
        m.refusal("origin not allowed");
        m.refusal("origin not allowed");
        m.refusal("bad \"key\"");
        m.deliveries = 7;
        m.deliveries_compressed = 5;
        m.messages_in_compressed = 4;
        let mut out = String::new();
        m.render(
            Gauges {
                connections: 3,
                open: 2,
                queued_bytes: 10,
                paused: 0,
                spliced_bytes: 0,
            },
            &mut out,
        );
        assert!(out.contains("# TYPE wschat_deliveries_total counter\nwschat_deliveries_total 7\n"));
        assert!(out.contains("wschat_messages_received_compressed_total 4\n"));
        assert!(out.contains(
            "# TYPE wschat_deliveries_compressed_total counter\nwschat_deliveries_compressed_total 5\n"
        ));
        assert!(out.contains("wschat_handshakes_refused_total{reason=\"origin not allowed\"} 2\n"));
        assert!(out.contains("wschat_handshakes_refused_total{reason=\"bad \\\"key\\\"\"} 1\n"));
        assert!(out.contains("wschat_connections_open 2\n"));
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            value.parse::<f64>().expect("numeric value");
        }
    }
}
