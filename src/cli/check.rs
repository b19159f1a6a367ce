//! `blf-bridge check`: validate a configuration file without binding sockets or
//! resolving names.

use super::{ConfigArg, EXIT_OK, GlobalOpts};
use crate::config::{Config, EmptyPresence, Keepalive};
use clap::Args;
use std::fmt::Write as _;

/// Arguments of `blf-bridge check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
                EXIT_OK
            }
            Err(code) => code,
        }
    }
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
