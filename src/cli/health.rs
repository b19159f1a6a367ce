//! `blf-bridge health`: is the running bridge ready? Asks `/readyz` of its
//! `[http] listen` (falls back to an OPTIONS over UDP with `--sip`, `--addr`,
//! or when the configuration turns HTTP off). For container health checks and
//! monitoring; never needs the account passwords.

use super::http_get::{self, Target};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, GlobalOpts};
use clap::Args;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Arguments of `blf-bridge health`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Exit codes:
  0  ready: /readyz answered 200 (with --sip: the bridge answered 200 to OPTIONS)
  1  not ready: /readyz answered 503 (the reason is printed: SIP listeners not bound,
     or the upstream did not answer within the last keep-alive interval), or another
     HTTP status (401: give --user/--password-env); with --sip: any answer other than
     200, or none (over UDP a stopped bridge cannot be told from a silent one)
  2  bad configuration or command line (account passwords are NOT needed)
  3  not reachable: nothing accepts the HTTP connection (bridge not running, wrong address)")]
pub struct HealthArgs {
    #[command(flatten)]
    pub target: Target,
    /// Probe SIP instead: send OPTIONS over UDP to `[listen] udp` of --config
    /// (or --addr) and expect 200.
    #[arg(long)]
    pub sip: bool,
    /// Address of the bridge's UDP listener for the SIP probe (implies --sip;
    /// default: `[listen] udp` of --config, else 127.0.0.1:5060).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

impl HealthArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        let timeout = Duration::from_millis(self.timeout_ms);
        let resolved = match self.target.resolve() {
            Ok(r) => r,
            Err(code) => return code,
        };
        let sip = self.sip || self.addr.is_some() || resolved.url.is_none();
        if !sip {
            let url = resolved.url.expect("checked above");
            return match http_get::get(&url, "/readyz", resolved.auth.as_ref(), timeout) {
                Ok((200, body)) => {
                    println!("{url}/readyz: {}", body.trim());
                    EXIT_OK
                }
                other => http_get::report_failure(&url, "/readyz", other),
            };
        }
        let addr = match (self.addr, &resolved.config) {
            (Some(a), _) => a,
            (None, Some(cfg)) => match cfg.listen.udp {
                Some(a) if a.ip().is_unspecified() => {
                    let lo: std::net::IpAddr = if a.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    };
                    SocketAddr::new(lo, a.port())
                }
                Some(a) => a,
                None => {
                    eprintln!("{}: no [listen] udp to probe", cfg.source);
                    return EXIT_CONFIG;
                }
            },
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 5060)),
        };
        match probe(addr, timeout) {
            Ok(line) => {
                println!("{addr}: {line}");
                EXIT_OK
            }
            // over UDP a stopped bridge and a silent one look the same: 1
            Err(e) => {
                eprintln!("{addr}: {e}");
                EXIT_FAILURE
            }
        }
    }
}

/// Send one OPTIONS (retransmitted every 500 ms) and return the status line of
/// a 200 answer.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(addr)
        .map_err(|e| format!("cannot reach: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut rng = crate::util::Rng::from_entropy();
    let branch = rng.branch();
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:health@{local}>;tag={}\r\nTo: <sip:{addr}>\r\nCall-ID: {}@health\r\nCSeq: 1 OPTIONS\r\n\
         User-Agent: blf-bridge-health\r\nContent-Length: 0\r\n\r\n",
        rng.tag(),
        rng.token(16)
    );
    let until = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        let _ = sock.send(msg.as_bytes());
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        if wait.is_zero() {
            break;
        }
        let _ = sock.set_read_timeout(Some(wait));
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let line = text.lines().next().unwrap_or_default().to_string();
            if line.starts_with("SIP/2.0 200") {
                return Ok(line);
            }
            if line.starts_with("SIP/2.0 ") {
                return Err(format!("answered {line}"));
            }
        }
    }
    Err(format!("no answer within {} ms", timeout.as_millis()))
}
