//! `blf-bridge check`: validate a configuration file without binding sockets,
//! and show what `[upstream] proxy` resolves to (RFC 3263: NAPTR, SRV with
//! priority, weight, port and TTL, addresses); `--offline` skips DNS.

use super::{ConfigArg, EXIT_CONFIG, EXIT_OK, GlobalOpts};
use crate::config::{Config, EmptyPresence, Keepalive};
use clap::Args;
use std::fmt::Write as _;

/// Arguments of `blf-bridge check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Do not resolve [upstream] proxy (no DNS queries).
    #[arg(long)]
    pub offline: bool,
}

impl CheckArgs {
    /// Exit code 0 with a summary on stdout, or 2 with `file:line: message`
    /// lines on stderr.
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        match self.config.load_with_profiles() {
            Ok((cfg, profiles)) => {
                print!("{}", summary(&cfg));
                println!(
                    "  profiles:      {} ({})",
                    profiles.names().join(", "),
                    cfg.profiles_dir
                        .as_ref()
                        .map(|d| format!("built-in + {}", d.display()))
                        .unwrap_or_else(|| "built-in".to_string())
                );
                if self.offline {
                    println!("  resolved:      (not resolved: --offline)");
                    return EXIT_OK;
                }
                match resolve(&cfg) {
                    Ok(text) => {
                        print!("{text}");
                        EXIT_OK
                    }
                    Err(e) => {
                        let line = std::fs::read_to_string(&cfg.source)
                            .ok()
                            .and_then(|t| proxy_line(&t))
                            .unwrap_or(0);
                        eprintln!(
                            "{}:{line}: upstream.proxy: cannot resolve: {e} (check --offline skips DNS)",
                            cfg.source
                        );
                        EXIT_CONFIG
                    }
                }
            }
            Err(code) => code,
        }
    }
}

/// Resolve `[upstream] proxy` as `run` does and describe the result.
fn resolve(cfg: &Config) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the resolver: {e}"))?;
    rt.block_on(async {
        let mut r = crate::runtime::dns::UpstreamResolver::new(
            &cfg.upstream,
            cfg.listen.udp,
            cfg.listen.tcp,
            std::time::Duration::from_secs(10),
        )?;
        let res = r.resolve().await?;
        let mut s = String::new();
        for (i, line) in res.to_string().lines().enumerate() {
            if i == 0 {
                let _ = writeln!(s, "  resolved:      {line}");
            } else {
                let _ = writeln!(s, "               {line}");
            }
        }
        Ok(s)
    })
}

/// The line of `proxy = …` in the file (1-based).
fn proxy_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix("proxy")
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// A short human-readable summary of a valid configuration (no secrets).
pub fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    let opt =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
    let _ = writeln!(s, "{}: OK", cfg.source);
    let _ = writeln!(
        s,
        "  listen:        udp {}, tcp {}, advertise {}",
        opt(cfg.listen.udp),
        opt(cfg.listen.tcp),
        cfg.listen.advertise.as_deref().unwrap_or("(automatic)")
    );
    let u = &cfg.upstream;
    let keepalive = match u.keepalive {
        Keepalive::None => "none".to_string(),
        Keepalive::Options => format!("OPTIONS every {} s", u.keepalive_interval_s),
        Keepalive::Crlf => format!("CRLF every {} s", u.keepalive_interval_s),
    };
    let empty = match u.empty_presence {
        EmptyPresence::Offline => "offline",
        EmptyPresence::Unknown => "unknown",
    };
    let _ = writeln!(
        s,
        "  upstream:      {} over {}, domain {}, keepalive {keepalive}, empty presence = {empty}",
        u.proxy, u.transport, u.domain
    );
    if u.proxy_srv || u.dns.is_some() {
        let _ = writeln!(
            s,
            "  dns:           {}, {}",
            u.dns
                .map_or_else(|| "system resolver".to_string(), |d| d.to_string()),
            if u.proxy_srv {
                if u.transport_given {
                    "proxy is a domain: SRV, then A/AAAA"
                } else {
                    "proxy is a domain: NAPTR, SRV, then A/AAAA"
                }
            } else {
                "proxy is host:port: A/AAAA"
            }
        );
    }
    if let Some(t) = &u.tls {
        let path = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string())
        };
        let _ = writeln!(
            s,
            "  tls:           certificate name {}, CAs: system roots + ca_file {}, client_cert {}",
            t.name,
            path(&t.ca_file),
            path(&t.client_cert)
        );
    }
    if !u.aliases.is_empty() {
        let _ = writeln!(s, "  aliases:       {}", u.aliases.join(", "));
    }
    let users: Vec<&str> = cfg.accounts.iter().map(|a| a.user.as_str()).collect();
    let _ = writeln!(s, "  accounts:      {} ({})", users.len(), users.join(", "));
    let _ = writeln!(
        s,
        "  profiles:      dir {}, default {}",
        cfg.profiles_dir.as_ref().map_or_else(
            || "(built-in only)".to_string(),
            |d| d.display().to_string()
        ),
        cfg.default_profile
    );
    let sub = &cfg.subscriptions;
    let _ = writeln!(
        s,
        "  subscriptions: phone expires {}..{} s (default {}), upstream {} s, at most {} upstream SUBSCRIBEs/s",
        sub.min_expires,
        sub.max_expires,
        sub.default_expires,
        sub.upstream_expires,
        sub.upstream_rate
    );
    let _ = writeln!(
        s,
        "  state:         {}",
        cfg.state_dir.as_ref().map_or_else(
            || "none (a restart loses subscriptions and registrations)".to_string(),
            |d| d.display().to_string()
        )
    );
    let _ = writeln!(
        s,
        "  security:      {} allowed networks",
        cfg.security.allow.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_essentials_and_hides_passwords() {
        let text = "[listen]\nudp = \"127.0.0.1:5060\"\n[upstream]\nproxy = \"pbx.test:5070\"\n\
                    domain = \"pbx.test\"\n[[account]]\nuser = \"1001\"\npassword = \"hunter2\"\n";
        let cfg = Config::parse(text, "t.toml", &|_| None).unwrap();
        let s = summary(&cfg);
        assert!(s.starts_with("t.toml: OK\n"), "{s}");
        assert!(s.contains("udp 127.0.0.1:5060, tcp -"), "{s}");
        assert!(s.contains("pbx.test:5070 over udp"), "{s}");
        assert!(s.contains("accounts:      1 (1001)"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
    }
}
