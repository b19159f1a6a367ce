//! One task per TCP connection: it frames what the peer sends (RFC 3261 §18.3,
//! RFC 5626 keep-alives) and hands the messages to the core task, and it writes
//! what the core queued for this connection. The core never awaits a socket: it
//! only `try_send`s into the connection's bounded queue.
//!
//! A connection ends when the peer closes it, on a read/write error, on a
//! framing error (garbage, oversize message, bad Content-Length — one warn line
//! with the peer and the reason), after the idle timeout, when a write does not
//! complete within the write timeout, or when the core drops the queue. Its last
//! act is a [`CoreEvent::Closed`] so the core can tell the endpoint.

use crate::flow::ConnId;
use crate::sip::{SipMessage, StreamError, StreamFramer, StreamItem};
use bytes::Bytes;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Read buffer per connection. Kept small: with thousands of idle phone
/// connections this is the dominant per-connection memory.
const READ_CHUNK: usize = 4096;

/// What connection tasks (and the acceptor) tell the core task.
#[derive(Debug)]
pub(crate) enum CoreEvent {
    /// The listener accepted a connection; the core registers it and starts its task.
    Accepted {
        stream: TcpStream,
        remote: SocketAddr,
    },
    /// A framed message arrived on a connection.
    Message {
        conn: ConnId,
        remote: SocketAddr,
        msg: SipMessage,
    },
    /// A CRLFCRLF keep-alive ping arrived.
    Ping { conn: ConnId, remote: SocketAddr },
    /// An outbound TLS connection finished its handshake.
    Connected { conn: ConnId },
    /// The connection task ended. `failed`: the peer refused or reset it, or
    /// could not be reached (for the upstream: time to try another server).
    Closed { conn: ConnId, failed: bool },
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    PeerClosed,
    Read(io::Error),
    Write(io::Error),
    WriteTimeout,
    Framing(StreamError),
    Idle,
    /// A message was started (or nothing sent after connecting) and not
    /// completed within the message timeout.
    Incomplete,
    /// The core dropped the write queue (shutdown, or it gave up on the peer).
    Dropped,
    /// The core task is gone.
    CoreGone,
    ConnectFailed(String),
    /// The TLS handshake failed (a refused certificate: what was expected and
    /// what the server presented).
    Tls(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Read(e) => write!(f, "read error: {e}"),
            CloseReason::Write(e) => write!(f, "write error: {e}"),
            CloseReason::WriteTimeout => f.write_str("peer does not read (write timed out)"),
            CloseReason::Framing(e) => write!(f, "{e}"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Incomplete => {
                f.write_str("no complete message within the message timeout")
            }
            CloseReason::Dropped => f.write_str("closed by the bridge"),
            CloseReason::CoreGone => f.write_str("bridge stopping"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl CloseReason {
    /// Worth a warn line (the peer misbehaved or is unreachable), as opposed to
    /// the ordinary end of a connection (debug).
    fn is_warning(&self) -> bool {
        matches!(
            self,
            CloseReason::Framing(_)
                | CloseReason::WriteTimeout
                | CloseReason::ConnectFailed(_)
                | CloseReason::Incomplete
                | CloseReason::Tls(_)
        )
    }
}

impl CloseReason {
    /// The peer could not be reached, refused the connection or reset it.
    pub(crate) fn is_unreachable(&self) -> bool {
        let reset = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
        };
        match self {
            CloseReason::ConnectFailed(_) => true,
            CloseReason::Read(e) | CloseReason::Write(e) => reset(e),
            _ => false,
        }
    }
}

/// Settings shared by all connection tasks.
#[derive(Debug, Clone)]
pub(crate) struct ConnParams {
    pub idle_timeout: Duration,
    /// An unfinished message (or, accepted, no message yet) may last this long.
    pub message_timeout: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    /// Source address for outgoing connections (the TCP listener's IP when it is
    /// a specific address), so the peer sees the advertised address.
    pub local_ip: Option<IpAddr>,
}

/// What an outbound TLS connection needs: the client configuration and the
/// name the server's certificate must carry (also the SNI).
#[derive(Debug)]
pub(crate) struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// Everything a connection task owns besides its socket and queue. `_guard` is
/// dropped when the task ends, which is how shutdown learns that all
/// connections are done.
pub(crate) struct ConnTask {
    pub id: ConnId,
    pub remote: SocketAddr,
    pub events: mpsc::Sender<CoreEvent>,
    pub params: Arc<ConnParams>,
    /// Outbound connections only: speak TLS over the TCP connection.
    pub tls: Option<Arc<TlsTarget>>,
    pub _guard: mpsc::Sender<()>,
}

impl ConnTask {
    /// Serve a connection the listener accepted.
    pub async fn run_accepted(self, stream: TcpStream, rx: mpsc::Receiver<Bytes>) {
        set_nodelay(&stream, self.remote);
        let reason = self.serve(stream, rx, true).await;
        self.finish(reason).await;
    }

    /// Open a connection to `self.remote` (bounded by the connect timeout), then
    /// serve it. Messages the core queued meanwhile are sent once connected.
    pub async fn run_outbound(self, rx: mpsc::Receiver<Bytes>) {
        let reason = match connect(self.remote, &self.params).await {
            Ok(stream) => {
                set_nodelay(&stream, self.remote);
                match self.tls.clone() {
                    None => {
                        tracing::debug!(peer = %self.remote, conn = self.id.0, "TCP connection opened");
                        self.serve(stream, rx, false).await
                    }
                    Some(tls) => match self.handshake(stream, &tls).await {
                        Ok(stream) => self.serve(stream, rx, false).await,
                        Err(reason) => reason,
                    },
                }
            }
            Err(e) => CloseReason::ConnectFailed(e),
        };
        self.finish(reason).await;
    }

    /// The TLS handshake over a connected stream, bounded by the connect
    /// timeout. A refused certificate comes back as one sentence.
    async fn handshake(
        &self,
        stream: TcpStream,
        tls: &TlsTarget,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, CloseReason> {
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let attempt = connector.connect(tls.name.clone(), stream);
        match tokio::time::timeout(self.params.connect_timeout, attempt).await {
            Ok(Ok(s)) => {
                let (_, conn) = s.get_ref();
                tracing::info!(
                    peer = %self.remote,
                    conn = self.id.0,
                    name = ?tls.name,
                    version = ?conn.protocol_version(),
                    cipher = ?conn.negotiated_cipher_suite().map(|c| c.suite()),
                    "TLS connection to the upstream established"
                );
                // the core hears it first: its backoff starts over
                let _ = self
                    .events
                    .send(CoreEvent::Connected { conn: self.id })
                    .await;
                Ok(s)
            }
            Ok(Err(e)) => Err(CloseReason::Tls(describe_tls_error(&e))),
            Err(_) => Err(CloseReason::Tls(format!(
                "no handshake within {} ms",
                self.params.connect_timeout.as_millis()
            ))),
        }
    }

    fn label(&self) -> &'static str {
        if self.tls.is_some() { "TLS" } else { "TCP" }
    }

    async fn finish(self, reason: CloseReason) {
        // TLS 1.3: a server that refuses the client (no or a bad client
        // certificate) says so with an alert after the handshake, on the first read
        let reason = match reason {
            CloseReason::Read(e) | CloseReason::Write(e)
                if self.tls.is_some() && is_tls_alert(&e) =>
            {
                CloseReason::Tls(describe_tls_error(&e))
            }
            r => r,
        };
        if let CloseReason::Tls(why) = &reason {
            // the one line an operator needs: who, and why refused
            tracing::warn!(peer = %self.remote, conn = self.id.0, "TLS connection to the upstream refused: {why}");
        } else if reason.is_warning() {
            tracing::warn!(peer = %self.remote, conn = self.id.0, %reason, "{} connection closed", self.label());
        } else {
            tracing::debug!(peer = %self.remote, conn = self.id.0, %reason, "{} connection closed", self.label());
        }
        // Fails only when the core is gone, which then needs no notice.
        let failed = reason.is_unreachable();
        let _ = self
            .events
            .send(CoreEvent::Closed {
                conn: self.id,
                failed,
            })
            .await;
    }

    /// `accepted`: the peer connected to us, so it must send a complete message
    /// (or a keep-alive) within the message timeout, like every message it starts.
    async fn serve<S>(
        &self,
        stream: S,
        mut rx: mpsc::Receiver<Bytes>,
        accepted: bool,
    ) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (id, remote, params) = (self.id, self.remote, &*self.params);
        let (mut rd, mut wr) = tokio::io::split(stream);
        // Last traffic in either direction, in ms since `origin`: the idle timer
        // counts from the later of the last read and the last completed write, so
        // a connection the endpoint keeps using (e.g. for NOTIFYs) stays open.
        let origin = Instant::now();
        let last = AtomicU64::new(0);
        let writer = async {
            while let Some(data) = rx.recv().await {
                // TLS buffers records: flush pushes them out now
                let write = async {
                    wr.write_all(&data).await?;
                    wr.flush().await
                };
                match tokio::time::timeout(params.write_timeout, write).await {
                    Ok(Ok(())) => last.store(millis_since(origin), Ordering::Relaxed),
                    Ok(Err(e)) => return CloseReason::Write(e),
                    Err(_) => return CloseReason::WriteTimeout,
                }
            }
            CloseReason::Dropped
        };
        tokio::pin!(writer);
        let mut framer = StreamFramer::new();
        let mut buf = vec![0u8; READ_CHUNK];
        // Since when a message is due: a started one must be completed within
        // the message timeout (a slow or never-ending header holds nothing long).
        let mut due_since = accepted.then(Instant::now);
        loop {
            let complete_by = due_since
                .map(|t| t + params.message_timeout)
                .unwrap_or_else(far_future);
            let idle_at = Duration::from_millis(last.load(Ordering::Relaxed))
                .checked_add(params.idle_timeout)
                .and_then(|d| origin.checked_add(d))
                .unwrap_or_else(far_future);
            tokio::select! {
                reason = &mut writer => return reason,
                r = rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return CloseReason::PeerClosed,
                        Ok(n) => n,
                        Err(e) => return CloseReason::Read(e),
                    };
                    last.store(millis_since(origin), Ordering::Relaxed);
                    framer.push(buf.get(..n).unwrap_or_default());
                    if due_since.is_none() {
                        due_since = Some(Instant::now());
                    }
                    loop {
                        let ev = match framer.next_item() {
                            Ok(Some(StreamItem::Message(msg))) => CoreEvent::Message { conn: id, remote, msg },
                            Ok(Some(StreamItem::Ping)) => CoreEvent::Ping { conn: id, remote },
                            Ok(Some(StreamItem::Pong)) => {
                                due_since = Some(Instant::now());
                                continue;
                            }
                            Ok(None) => break,
                            Err(e) => return CloseReason::Framing(e),
                        };
                        // a message completed: the next one's time starts now
                        due_since = Some(Instant::now());
                        if self.events.send(ev).await.is_err() {
                            return CloseReason::CoreGone;
                        }
                    }
                    if framer.buffered() == 0 {
                        due_since = None;
                    }
                }
                _ = tokio::time::sleep_until(complete_by), if due_since.is_some() => {
                    return CloseReason::Incomplete;
                }
                _ = tokio::time::sleep_until(idle_at) => {
                    let idle_for = millis_since(origin).saturating_sub(last.load(Ordering::Relaxed));
                    if u128::from(idle_for) >= params.idle_timeout.as_millis() {
                        return CloseReason::Idle;
                    }
                }
            }
        }
    }
}

/// SIP messages are small and latency matters more than segment count.
fn set_nodelay(stream: &TcpStream, remote: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(peer = %remote, error = %e, "cannot set TCP_NODELAY");
    }
}

fn is_tls_alert(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(_))
    )
}

/// A handshake error as one sentence: a refused certificate is already
/// explained by [`crate::tls`]; other rustls errors are named; I/O errors as is.
fn describe_tls_error(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            o.0.to_string()
        }
        Some(rustls::Error::AlertReceived(a)) => {
            use rustls::AlertDescription as A;
            let hint = match a {
                A::CertificateRequired | A::HandshakeFailure => {
                    " (does it require a client certificate? [upstream] client_cert / client_key)"
                }
                A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::CertificateExpired
                | A::AccessDenied => " (it refused the bridge's client certificate)",
                A::ProtocolVersion => " (it speaks neither TLS 1.2 nor 1.3)",
                _ => "",
            };
            format!("the server sent the alert {a:?}{hint}")
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

async fn connect(remote: SocketAddr, p: &ConnParams) -> Result<TcpStream, String> {
    let local = p
        .local_ip
        .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == remote.is_ipv4());
    let attempt = async {
        match local {
            Some(ip) => {
                let sock = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(remote).await
            }
            None => TcpStream::connect(remote).await,
        }
    };
    match tokio::time::timeout(p.connect_timeout, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms",
            p.connect_timeout.as_millis()
        )),
    }
}

/// A deadline that never comes in practice (tokio's own "far future" is ~30 years).
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_reset_and_unreachable_peers_are_failures_other_ends_are_not() {
        let e = |k| io::Error::from(k);
        for r in [
            CloseReason::ConnectFailed("connection refused".into()),
            CloseReason::ConnectFailed("no answer within 5 s".into()),
            CloseReason::Read(e(io::ErrorKind::ConnectionReset)),
            CloseReason::Write(e(io::ErrorKind::BrokenPipe)),
        ] {
            assert!(r.is_unreachable(), "{r}");
        }
        for r in [
            CloseReason::PeerClosed,
            CloseReason::Idle,
            CloseReason::Dropped,
            CloseReason::CoreGone,
            CloseReason::Read(e(io::ErrorKind::InvalidData)),
        ] {
            assert!(!r.is_unreachable(), "{r}");
        }
    }
}
