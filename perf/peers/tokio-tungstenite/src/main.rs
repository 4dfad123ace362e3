//! Comparison peer for wschat: a tokio-tungstenite broadcast chat server.
//!
//! Written in the style of tokio-tungstenite's own `examples/server.rs`: a shared
//! `Arc<Mutex<HashMap<SocketAddr, UnboundedSender<Message>>>>` peer map, one task
//! per connection, and an unbounded channel per peer that is forwarded into its
//! WebSocket sink. Multi-thread tokio runtime (the `#[tokio::main]` default).
//!
//! Chat semantics (same as wschat):
//! - each user is named `User <remote port>`;
//! - on connect the others get `User <port> joined`, on disconnect `User <port> left`;
//! - text `T` goes to every other user as `User <port>: T`; binary is relayed unchanged;
//! - the sender never gets its own message back.
//!
//! Port: `--port N` or the first positional argument, else env `PORT`, else 8080.
//! Listens on 127.0.0.1 and prints exactly one line `listening on 127.0.0.1:PORT`.
//!
//! `--tls CERT.pem KEY.pem`: serve wss instead, the usual tokio way (tokio-rustls'
//! `TlsAcceptor` in front of `accept_async`, rustls on ring as wschat uses, TLS 1.2
//! and 1.3, ALPN `http/1.1`). tungstenite has no permessage-deflate, so there is
//! no compression mode.

use std::{
    collections::HashMap,
    env,
    io::{Error as IoError, Write},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, stream::TryStreamExt, StreamExt};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::Message;

type Tx = UnboundedSender<Message>;
type PeerMap = Arc<Mutex<HashMap<SocketAddr, Tx>>>;

/// Send `msg` to every peer in `peers` except `except`.
fn send_others(peers: &HashMap<SocketAddr, Tx>, except: &SocketAddr, msg: Message) {
    for (peer_addr, tx) in peers.iter() {
        if peer_addr != except {
            // A peer whose task is finishing may have dropped its receiver already.
            let _ = tx.unbounded_send(msg.clone());
        }
    }
}

/// Send `msg` to every connected peer except `except`.
fn broadcast(peer_map: &PeerMap, except: &SocketAddr, msg: Message) {
    send_others(&peer_map.lock().unwrap(), except, msg);
}

async fn handle_connection<S>(peer_map: PeerMap, raw_stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws_stream = match tokio_tungstenite::accept_async(raw_stream).await {
        Ok(ws) => ws,
        Err(_) => return, // failed handshake: just drop the connection
    };
    let port = addr.port();

    // Announce the newcomer to everyone already here and insert its sender,
    // under one lock so that two concurrent joiners always see each other.
    let (tx, rx) = unbounded();
    {
        let mut peers = peer_map.lock().unwrap();
        send_others(&peers, &addr, Message::text(format!("User {port} joined")));
        peers.insert(addr, tx);
    }

    let (outgoing, incoming) = ws_stream.split();

    let broadcast_incoming = incoming.try_for_each(|msg| {
        match msg {
            Message::Text(text) => {
                let out = Message::text(format!("User {port}: {}", text.as_str()));
                broadcast(&peer_map, &addr, out);
            }
            Message::Binary(_) => broadcast(&peer_map, &addr, msg),
            // Ping/Pong are answered by tungstenite itself; Close ends the stream.
            _ => {}
        }
        future::ok(())
    });

    let receive_from_others = rx.map(Ok).forward(outgoing);

    pin_mut!(broadcast_incoming, receive_from_others);
    future::select(broadcast_incoming, receive_from_others).await;

    let mut peers = peer_map.lock().unwrap();
    peers.remove(&addr);
    send_others(&peers, &addr, Message::text(format!("User {port} left")));
}

/// The port, and the certificate and key files of `--tls`.
fn args() -> (u16, Option<(String, String)>) {
    let mut args = env::args().skip(1);
    let mut port = None;
    let mut tls = None;
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            let cert = args.next().expect("--tls CERT.pem KEY.pem");
            let key = args.next().expect("--tls CERT.pem KEY.pem");
            tls = Some((cert, key));
        } else if arg == "--port" {
            port = args.next();
        } else if let Some(v) = arg.strip_prefix("--port=") {
            port = Some(v.to_string());
        } else if port.is_none() {
            port = Some(arg);
        }
    }
    let port = port.or_else(|| env::var("PORT").ok()).unwrap_or_else(|| "8080".to_string());
    (port.parse().expect("port must be a number 0-65535"), tls)
}

/// A rustls acceptor for the PEM certificate chain and key files.
fn acceptor(cert: &str, key: &str) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("readable certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("a PEM private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a certificate and its key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::main]
async fn main() -> Result<(), IoError> {
    let (port, tls) = args();
    let tls = tls.map(|(cert, key)| acceptor(&cert, &key));
    let state = PeerMap::new(Mutex::new(HashMap::new()));

    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("Failed to bind");
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }

    // Spawn the handling of each connection in a separate task.
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        tokio::spawn(handle_connection(state.clone(), stream, addr));
                    }
                    Some(acceptor) => {
                        let (acceptor, state) = (acceptor.clone(), state.clone());
                        tokio::spawn(async move {
                            // A failed TLS handshake: drop the connection.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                handle_connection(state, stream, addr).await;
                            }
                        });
                    }
                }
            }
            // e.g. EMFILE under load: back off briefly and keep serving.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
