//! The HTTP listener every role serves on: plain TCP or TLS (rustls, from PEM files), with a
//! limit on the connections one client address may hold open.
//!
//! Connections are accepted by a task of their own and handed to the server once their TLS
//! handshake is done, so that a slow or silent client cannot hold up everyone else's accept.
//! A connection over its address's limit (IPv6 addresses count per /64, the block one client
//! usually holds) or over the listener's total is closed at once; counts go down as
//! connections close. A connection with no traffic either way for the idle timeout is closed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Future;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may carry nothing, either way, before it is closed. Above the one
/// minute between readings of a typical device, so that its keep-alive connection stays.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read the TLS {what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the TLS certificate and key do not make a valid configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// PEM certificate chain and private key: TLS when both are given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Most connections one client address may hold open.
    pub max_connections_per_ip: usize,
    /// Most connections open at once, all clients together.
    pub max_connections: usize,
    /// How long a connection may carry nothing either way ([`IDLE_TIMEOUT`] is a good value).
    pub idle_timeout: Duration,
    /// Application protocols offered in the TLS handshake: [`http_alpn`] for HTTP, none for
    /// MQTT (whose clients rarely ask, and are refused when they ask for one not offered).
    pub alpn: Vec<Vec<u8>>,
}

/// The ALPN protocols of the HTTP listener.
pub fn http_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// Loads a rustls server configuration from PEM files, offering the `alpn` protocols.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, ListenerError> {
    let pem = |what, path: &Path, reason: String| ListenerError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("certificate", cert, "it holds no certificate".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem("private key", key, e.to_string()))?;
    // The provider is named, not taken from the process default: several are compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Open connections, per client and in all.
#[derive(Default)]
struct Counts(Mutex<(HashMap<IpAddr, usize>, usize)>);

/// The client an address stands for: itself for IPv4, its /64 for IPv6.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl Counts {
    fn try_add(self: &Arc<Self>, ip: IpAddr, max_per_ip: usize, max_total: usize) -> Option<Slot> {
        let ip = client_of(ip);
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *guard;
        if *total >= max_total {
            return None;
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            return None;
        }
        *count += 1;
        *total += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count, given back when the connection drops.
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection.
pub struct Connection {
    stream: Stream,
    _slot: Slot,
    /// When it is closed for want of traffic; pushed back by every read or write.
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
}

impl Connection {
    fn new(stream: Stream, slot: Slot, idle_timeout: Duration) -> Self {
        Connection {
            stream,
            _slot: slot,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
        }
    }

    /// After an I/O attempt: traffic pushes the deadline back; no traffic past it is an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + self.idle_timeout;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The listener, for `axum::serve`.
pub struct Listener {
    accepted: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    tls: bool,
}

impl Listener {
    pub async fn bind(config: &ListenerConfig) -> Result<Listener, ListenerError> {
        let acceptor = match &config.tls {
            Some((cert, key)) => Some(TlsAcceptor::from(Arc::new(tls_config(
                cert,
                key,
                config.alpn.clone(),
            )?))),
            None => None,
        };
        let tcp = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ListenerError::Bind {
                addr: config.addr,
                source,
            })?;
        let local = tcp.local_addr().map_err(|source| ListenerError::Bind {
            addr: config.addr,
            source,
        })?;
        let (tx, accepted) = mpsc::channel(1024);
        let tls = acceptor.is_some();
        let limits = Limits {
            per_ip: config.max_connections_per_ip.max(1),
            total: config.max_connections.max(1),
            idle: config.idle_timeout,
        };
        tokio::spawn(accept_loop(tcp, acceptor, limits, tx));
        Ok(Listener {
            accepted,
            local,
            tls,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

struct Limits {
    per_ip: usize,
    total: usize,
    idle: Duration,
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: Option<TlsAcceptor>,
    limits: Limits,
    tx: mpsc::Sender<(Connection, SocketAddr)>,
) {
    let (max_per_ip, max_total) = (limits.per_ip, limits.total);
    let counts = Arc::new(Counts::default());
    let mut refused: u64 = 0;
    loop {
        // Ends with the server, so the port is released rather than left queueing.
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = counts.try_add(peer.ip(), max_per_ip, max_total) else {
            refused += 1;
            // One line per thousand refusals, not one per connection.
            if refused % 1000 == 1 {
                tracing::warn!(
                    %peer,
                    max_per_ip,
                    max_total,
                    refused,
                    "closed a connection over the per-address or total limit"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        match &acceptor {
            None => {
                let connection = Connection::new(Stream::Plain(stream), slot, limits.idle);
                if tx.send((connection, peer)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let idle = limits.idle;
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let connection =
                                Connection::new(Stream::Tls(Box::new(tls)), slot, idle);
                            let _ = tx.send((connection, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        this.watch(cx, poll)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.watch(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn serve(config: ListenerConfig) -> SocketAddr {
        let listener = Listener::bind(&config).await.unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// The answer to a GET, or what came before the server closed (or reset) the connection.
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> String {
        let request = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
        let mut answer = Vec::new();
        if stream.write_all(request).await.is_ok() {
            let _ = stream.read_to_end(&mut answer).await;
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn serves_over_tls_with_a_certificate_from_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let addr = serve(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some((cert_path.clone(), key_path)),
            max_connections_per_ip: 16,
            max_connections: 16,
            idle_timeout: IDLE_TIMEOUT,
            alpn: http_alpn(),
        })
        .await;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let answer = get(tls).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        // Plain HTTP on the TLS port gets no answer.
        let plain = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(!plain.contains("200"), "{plain}");

        // Files that are not what they should be are named in the error.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = tls_config(&garbage, &cert_path, http_alpn()).unwrap_err();
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let addr = serve(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            max_connections_per_ip: 4,
            max_connections: 4,
            idle_timeout: Duration::from_millis(200),
            alpn: http_alpn(),
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        // A client that talks is served.
        let answer = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn connections_over_the_per_address_limit_are_closed() {
        let addr = serve(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            max_connections_per_ip: 2,
            max_connections: 100,
            idle_timeout: IDLE_TIMEOUT,
            alpn: http_alpn(),
        })
        .await;
        let first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The third is closed without an answer.
        let third = get(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(third, "");
        // Once one closes, there is room again.
        drop(first);
        let mut answer = String::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = get(TcpStream::connect(addr).await.unwrap()).await;
            if !answer.is_empty() {
                break;
            }
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
