//! A plain HTTP/1.1 GET over `std::net::TcpStream` for `health` and `status`
//! (they talk to the bridge's own `[http] listen`, on loopback or the LAN; no
//! TLS, no redirects, `Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// Why a GET did not produce an answer.
#[derive(Debug)]
pub enum GetError {
    /// Nothing listens there, or it did not answer in time.
    Unreachable(String),
    /// Something answered, but not HTTP.
    Garbled(String),
}

/// Print why a GET of `path` on `url` did not give 200 and return the exit
/// code (`health` and `status` share it): 401 and other codes → failure,
/// nothing listening → unreachable.
pub fn report_failure(
    url: &impl std::fmt::Display,
    path: &str,
    result: Result<(u16, String), GetError>,
) -> i32 {
    match result {
        Ok((401, _)) => {
            eprintln!(
                "{url}{path}: 401, the HTTP listener wants basic authentication (--user and --password-env, or [http] user/password in --config)"
            );
            super::EXIT_FAILURE
        }
        Ok((code, body)) => {
            eprintln!("{url}{path}: {code} {}", body.trim());
            super::EXIT_FAILURE
        }
        Err(GetError::Unreachable(e)) => {
            eprintln!(
                "{url}: not reachable: {e} (is blf-bridge running, with [http] listen here?)"
            );
            super::EXIT_UNREACHABLE
        }
        Err(GetError::Garbled(e)) => {
            eprintln!("{url}: {e}");
            super::EXIT_FAILURE
        }
    }
}

/// `http://host:port` as given by `--url` (a path after it is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}': only http://host:port URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) =
            crate::config::split_host_port(authority).map_err(|e| format!("'{url}': {e}"))?;
        // split_host_port defaults to the SIP port; HTTP's is 80
        let port = if authority.ends_with(&format!(":{port}")) {
            port
        } else {
            80
        };
        Ok(BaseUrl { host, port })
    }

    /// The URL of `[http] listen`; an unspecified address (0.0.0.0, ::) is
    /// asked on loopback.
    pub fn of_listen(a: SocketAddr) -> BaseUrl {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v) if v.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v) if v.is_unspecified() => "::1".to_string(),
            ip => ip.to_string(),
        };
        BaseUrl {
            host: ip,
            port: a.port(),
        }
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// GET `path`; `(status code, body)`.
pub fn get(
    base: &BaseUrl,
    path: &str,
    auth: Option<&(String, String)>,
    timeout: Duration,
) -> Result<(u16, String), GetError> {
    let addrs: Vec<SocketAddr> = (base.host.as_str(), base.port)
        .to_socket_addrs()
        .map_err(|e| GetError::Unreachable(format!("cannot resolve {}: {e}", base.host)))?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let mut stream = stream.ok_or(GetError::Unreachable(last))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: blf-bridge-cli\r\nAccept: */*\r\nConnection: close\r\n",
        base.host, base.port
    );
    if let Some((u, p)) = auth {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            crate::http::base64(format!("{u}:{p}").as_bytes())
        ));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| GetError::Unreachable(e.to_string()))?;
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(GetError::Unreachable(format!("no answer: {e}")));
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), GetError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| GetError::Garbled("no HTTP response".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| GetError::Garbled("no HTTP status line".into()))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || size > b.len() {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Where `health` and `status` ask, and with which credentials: `--url`, else
/// `[http] listen` of `--config` (loaded without needing the account
/// passwords), else `http://127.0.0.1:8080`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// The bridge's HTTP address (default: `[http] listen` of --config, else
    /// http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Read `[http] listen` (and its basic authentication) from this
    /// configuration; account passwords need not be set.
    #[arg(short, long, value_name = "FILE", env = "BLF_BRIDGE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Basic-authentication user (default: `[http] user` of --config).
    #[arg(long)]
    pub user: Option<String>,
    /// Environment variable holding the basic-authentication password
    /// (default: `[http] password`/`password_env` of --config).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

/// The resolved target: `None` URL when the configuration turns HTTP off.
pub struct Resolved {
    pub url: Option<BaseUrl>,
    pub auth: Option<(String, String)>,
    pub config: Option<crate::config::Config>,
}

/// Stand-in for unset password variables, so a configuration loads for
/// `health`/`status`/`init` without the secrets.
pub const UNSET: &str = "\u{0}unset";

/// Load a configuration without needing its `password_env` variables.
pub fn load_lenient(path: &Path) -> Result<crate::config::Config, i32> {
    crate::config::Config::load_with_env(path, &|k| {
        Some(std::env::var(k).unwrap_or_else(|_| UNSET.to_string()))
    })
    .map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        super::EXIT_CONFIG
    })
}

impl Target {
    /// Errors are printed; the code is [`super::EXIT_CONFIG`].
    pub fn resolve(&self) -> Result<Resolved, i32> {
        let config = match &self.config {
            Some(p) if self.url.is_none() || self.user.is_none() => Some(load_lenient(p)?),
            _ => None,
        };
        let url = match &self.url {
            Some(u) => Some(BaseUrl::parse(u).map_err(|e| {
                eprintln!("--url {e}");
                super::EXIT_CONFIG
            })?),
            None => match &config {
                Some(c) => c.http.listen.map(BaseUrl::of_listen),
                None => Some(BaseUrl::of_listen(SocketAddr::from(([127, 0, 0, 1], 8080)))),
            },
        };
        let password = match &self.password_env {
            Some(var) => match std::env::var(var) {
                Ok(p) => Some(p),
                Err(_) => {
                    eprintln!("--password-env: environment variable {var} is not set");
                    return Err(super::EXIT_CONFIG);
                }
            },
            None => config
                .as_ref()
                .and_then(|c| c.http.password.clone())
                .filter(|p| p != UNSET),
        };
        let user = self
            .user
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.http.user.clone()));
        let auth = match (user, password) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => None,
        };
        Ok(Resolved { url, auth, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses() {
        assert_eq!(
            BaseUrl::parse("http://127.0.0.1:8080/readyz").unwrap(),
            BaseUrl {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        assert_eq!(BaseUrl::parse("http://bridge.lan").unwrap().port, 80);
        assert!(BaseUrl::parse("https://x").is_err());
        let (code, body) =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nnope")
                .unwrap();
        assert_eq!((code, body.as_str()), (503, "nope"));
        let (code, body) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((code, body.as_str()), (200, "abcde"));
    }
}
