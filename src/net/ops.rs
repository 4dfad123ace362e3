//! The loop's own HTTP endpoints, for operators: `GET /healthz` and
//! `GET /metrics` (Prometheus text format). Every other plain request is
//! the service's to answer.

use super::metrics::{self, Gauges};
use super::peers::Peers;
use crate::protocol::connection::Phase;
use crate::protocol::handshake::HttpResponse;
use crate::service::{Gauge, HttpReply};

/// The answer to `path` if it is one of the loop's endpoints. `/healthz`
/// is `200 ok`, or `200 degraded: WHY` while the service says it is
/// degraded (a cluster node that cannot reach Redis still serves its own
/// users, so it stays in a balancer's pool).
pub fn answer(
    path: &str,
    peers: &Peers,
    service_gauges: impl FnOnce() -> Vec<Gauge>,
    degraded: impl FnOnce() -> Option<String>,
) -> Option<HttpResponse> {
    match path {
        "/healthz" => Some(match degraded() {
            None => HttpResponse::text(200, "ok"),
            Some(why) => HttpResponse::text(200, &format!("degraded: {why}")),
        }),
        "/metrics" => {
            let mut body = String::with_capacity(4096);
            let gauges = Gauges {
                connections: peers.slab.len(),
                open: peers
                    .slab
                    .iter()
                    .filter(|(_, p)| p.conn.phase() == Phase::Open)
                    .count(),
                queued_bytes: peers.queued_bytes(),
                paused: peers.slab.iter().filter(|(_, p)| p.is_paused()).count(),
                spliced_bytes: peers.spliced_bytes(),
            };
            peers.metrics.render(gauges, &mut body);
            for g in service_gauges() {
                metrics::gauge(&mut body, g.name, g.help, g.value);
            }
            Some(HttpResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: Vec::new(),
                body: body.into_bytes(),
            })
        }
        _ => None,
    }
}

/// A service's reply as the protocol's response.
pub fn response(reply: HttpReply) -> HttpResponse {
    HttpResponse {
        status: reply.status,
        content_type: reply.content_type,
        headers: reply.headers,
        body: reply.body,
    }
}
