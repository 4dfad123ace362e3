//! Many connections at once, from chosen loopback addresses: the
//! helpers of the abuse tests (rooms, large rooms, command cost).
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a client
//! may bind to 127.0.0.2, 127.0.0.3, … before connecting and look, to the
//! server, like another machine.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use super::{read_head, Client, Head, TIMEOUT};

/// The loopback address `127.0.0.<n>`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `addr` from `local` (any port), with read and write
/// timeouts of [`TIMEOUT`].
pub fn tcp_from(local: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(local, 0).into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {local} -> {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// An upgrade request for `path` at `host`, with `extra` header lines.
pub fn upgrade_request_to(host: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Asks to upgrade to `path` from `local`; returns the response head and
/// the connection (open on a `101`; the server closes it otherwise).
pub fn try_upgrade(addr: SocketAddr, local: IpAddr, path: &str) -> (Head, TcpStream) {
    let mut stream = tcp_from(local, addr);
    stream
        .write_all(upgrade_request_to(addr, path, "").as_bytes())
        .expect("write upgrade");
    let head = read_head(&mut stream);
    (head, stream)
}

/// A user that completed the upgrade and never reads again: what a cheap
/// attacker, or an idle crowd, holds.
pub fn idle_user(addr: SocketAddr, local: IpAddr, path: &str) -> TcpStream {
    let (head, stream) = try_upgrade(addr, local, path);
    assert_eq!(head.status, 101, "upgrade to {path} from {local}: {head:?}");
    stream
}

/// `n` idle users in `path`, from `local`, connected one after another.
pub fn idle_crowd(addr: SocketAddr, local: IpAddr, path: &str, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| idle_user(addr, local, path)).collect()
}

/// Reads what has arrived on `stream` for `for_at_least`, returning the
/// byte count (used to measure what an idle user was sent).
pub fn drain_for(stream: &mut TcpStream, for_at_least: Duration) -> usize {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + for_at_least;
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(_) => {}
        }
    }
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    total
}

impl Client {
    /// A tungstenite client of `path` from `local`, offering `protocol`
    /// if given (`wschat.v1.json` for JSON events).
    pub fn connect_to(
        addr: SocketAddr,
        local: IpAddr,
        path: &str,
        protocol: Option<&str>,
    ) -> Client {
        let stream = tcp_from(local, addr);
        let port = stream.local_addr().unwrap().port();
        let mut request = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("request");
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        let (ws, response) = tungstenite::client(request, stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake to {path} with {addr}: {e}"));
        assert_eq!(response.status(), 101);
        Client { ws, port }
    }

    /// The next text, parsed as a JSON object.
    pub fn next_json(&mut self) -> serde_json::Value {
        let text = self.next_text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }
}
