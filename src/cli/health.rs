//! `blf-bridge health`: send an OPTIONS to a running bridge over UDP and exit 0
//! when it answers 200 (for container health checks and monitoring).

use super::{EXIT_FAILURE, EXIT_OK, GlobalOpts};
use clap::Args;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Arguments of `blf-bridge health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Address of the bridge's UDP listener (default: from --config, else
    /// 127.0.0.1:5060).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Probe the `[listen] udp` address of this configuration (an unspecified
    /// address such as 0.0.0.0 is probed on loopback).
    #[arg(short, long, value_name = "FILE", env = "BLF_BRIDGE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

impl HealthArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        let addr = match (self.addr, &self.config) {
            (Some(a), _) => a,
            (None, Some(path)) => match crate::config::Config::load(path) {
                Ok(cfg) => match cfg.listen.udp {
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
                        eprintln!("{}: no [listen] udp to probe", path.display());
                        return super::EXIT_CONFIG;
                    }
                },
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return super::EXIT_CONFIG;
                }
            },
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 5060)),
        };
        match probe(addr, Duration::from_millis(self.timeout_ms)) {
            Ok(line) => {
                println!("{addr}: {line}");
                EXIT_OK
            }
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
