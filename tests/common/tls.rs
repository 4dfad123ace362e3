//! TLS helpers for the tests: a CA and a `localhost` certificate made
//! with rcgen in the test, written to PEM files in a fresh temporary
//! folder, a tungstenite client over a blocking rustls stream, and a raw
//! client over TLS that negotiates permessage-deflate and reads frame
//! headers itself (to see RSV1 on the wire, which no library shows).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

use wschat::protocol::client as wsclient;
use wschat::protocol::deflate;

use super::{read_head, tcp, upgrade_request};

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A test CA with one `localhost` (and 127.0.0.1, ::1) certificate, its
/// files in `dir`.
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    /// The leaf's DER, to tell which certificate a server presented.
    pub leaf_der: CertificateDer<'static>,
    /// The leaf's SubjectPublicKeyInfo, DER (for Chromium's SPKI list).
    pub leaf_spki: Vec<u8>,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A file `name` holding `contents` in a fresh folder (a key or a
/// secret for a flag that reads one from a file).
pub fn file_with(what: &str, contents: &str) -> PathBuf {
    let path = temp_dir(what).join(what);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// A fresh empty folder under the system's temporary folder.
pub fn temp_dir(what: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wschat-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl TestPki {
    /// The binary with `listen` (its plain `--listen`), a TLS listener on
    /// `127.0.0.1:0` serving this certificate, and `extra`.
    pub fn start_server(&self, listen: &[&str], extra: &[&str]) -> super::Server {
        let mut args = listen.to_vec();
        args.extend_from_slice(&[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            self.cert_path.to_str().unwrap(),
            "--tls-key",
            self.key_path.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        super::Server::start_raw(&args)
    }

    pub fn new() -> TestPki {
        let dir = temp_dir("tls");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wschat test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let pki = TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_path: dir.join("cert.pem"),
            key_path: dir.join("key.pem"),
            ca_path: dir.join("ca.pem"),
            leaf_der: CertificateDer::from(Vec::new()),
            leaf_spki: Vec::new(),
            dir,
        };
        std::fs::write(&pki.ca_path, &pki.ca_pem).unwrap();
        let mut pki = pki;
        pki.issue(&ca, &ca_key, "wschat test server");
        pki
    }

    /// Issues a leaf certificate and key signed by `ca` and writes them to
    /// the cert and key files.
    fn issue(&mut self, ca: &rcgen::Certificate, ca_key: &KeyPair, name: &str) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, ca, ca_key).unwrap();
        std::fs::write(&self.cert_path, leaf.pem()).unwrap();
        std::fs::write(&self.key_path, key.serialize_pem()).unwrap();
        self.leaf_der = leaf.der().clone();
        self.leaf_spki = key.public_key_der();
    }

    /// A rustls client config trusting this CA, offering ALPN http/1.1.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        client_config_trusting(std::slice::from_ref(&self.ca_der))
    }
}

/// A rustls client config trusting `roots`.
pub fn client_config_trusting(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` for `localhost`, handshake done.
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream {
    let socket = tcp(addr);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut stream = StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    stream
}

/// A WebSocket client over TLS (wss://localhost:PORT/path).
pub struct TlsClient {
    pub ws: WebSocket<TlsStream>,
    pub port: u16,
}

impl TlsClient {
    pub fn connect(addr: SocketAddr, path: &str, config: Arc<ClientConfig>) -> TlsClient {
        let stream = tls_connect(addr, config);
        let port = stream.sock.local_addr().unwrap().port();
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, response) = tungstenite::client(url, stream)
            .unwrap_or_else(|e| panic!("wss handshake with {addr}: {e}"));
        assert_eq!(response.status(), 101);
        TlsClient { ws, port }
    }

    pub fn name(&self) -> String {
        format!("User {}", self.port)
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next text message (pings skipped); panics after the socket's
    /// read timeout.
    pub fn next_text(&mut self) -> String {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return text,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("wss client {}: expected text, got {other:?}", self.port),
                Err(e) => panic!("wss client {}: read failed: {e}", self.port),
            }
        }
    }

    pub fn next_binary(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => return bytes,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("wss client {}: expected binary, got {other:?}", self.port),
                Err(e) => panic!("wss client {}: read failed: {e}", self.port),
            }
        }
    }
}

/// A WebSocket client over TLS speaking raw frames: it offers
/// `permessage-deflate`, and tells which messages came compressed.
pub struct TlsRaw {
    pub stream: TlsStream,
    pub port: u16,
    /// The server's `Sec-WebSocket-Extensions` answer.
    pub extensions: Option<String>,
}

impl TlsRaw {
    /// Upgrades over TLS offering `permessage-deflate`; panics unless the
    /// answer is 101.
    pub fn deflating(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsRaw {
        let mut stream = tls_connect(addr, config);
        let port = stream.sock.local_addr().unwrap().port();
        let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        stream
            .write_all(upgrade_request(addr, offer).as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert_eq!(head.status, 101, "{:?}", head.headers);
        TlsRaw {
            stream,
            port,
            extensions: head.get("sec-websocket-extensions").map(str::to_owned),
        }
    }

    pub fn name(&self) -> String {
        format!("User {}", self.port)
    }

    /// Sends one masked frame.
    pub fn send(&mut self, first: u8, payload: &[u8]) {
        let mut out = Vec::new();
        wsclient::encode_frame_into(&mut out, first, payload, [9, 8, 7, 6]);
        self.stream.write_all(&out).unwrap();
    }

    /// The next frame: its first byte and payload.
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        super::read_raw_frame(&mut self.stream)
    }

    /// The next text message (inflated if it came with RSV1) and whether
    /// it came compressed. The server sends each message in one frame.
    pub fn next_text(&mut self) -> (String, bool) {
        let (first, payload) = self.read_frame();
        assert_eq!(first & 0x8F, 0x81, "one final text frame, got {first:#x}");
        let compressed = first & 0x40 != 0;
        let bytes = match compressed {
            true => deflate::inflate(&payload, 1 << 24).expect("valid deflate"),
            false => payload,
        };
        (String::from_utf8(bytes).unwrap(), compressed)
    }

    /// Reads text messages until one ends with `tail`; returns it and
    /// whether it came compressed.
    pub fn text_ending_with(&mut self, tail: &str) -> (String, bool) {
        loop {
            let (text, compressed) = self.next_text();
            if text.ends_with(tail) {
                return (text, compressed);
            }
        }
    }
}
