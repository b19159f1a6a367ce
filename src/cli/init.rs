//! `blf-bridge init`: write a commented starter configuration from a few
//! answers (flags; questions only when stdin is a terminal and a flag is
//! missing), then check it like `blf-bridge check`.

use super::http_get::load_lenient;
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, GlobalOpts};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Arguments of `blf-bridge init`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Example:
  blf-bridge init --upstream pbx.example.com:5060 --account 1001 --lan-address 192.168.1.10

Exit codes: 0 written and checked, 1 the file cannot be written, 2 a missing or bad answer
(or the file exists: --force overwrites).")]
pub struct InitArgs {
    /// The hosted PBX's SIP proxy, host[:port] (no "sip:").
    #[arg(long, value_name = "HOST[:PORT]")]
    pub upstream: Option<String>,
    /// The SIP domain of the accounts (default: the upstream's host).
    #[arg(long)]
    pub domain: Option<String>,
    /// An account the bridge subscribes with, `user` or `user:PASSWORD_ENV`
    /// (the password is read from that environment variable; default
    /// BLF_PW_<user>). Repeat for more accounts.
    #[arg(long = "account", value_name = "USER[:PASSWORD_ENV]")]
    pub accounts: Vec<String>,
    /// The bridge's LAN address, the phones' outbound proxy (`[listen] advertise`).
    #[arg(long, value_name = "IP")]
    pub lan_address: Option<String>,
    /// Where the phones send SIP (`[listen] udp`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:5060")]
    pub listen: String,
    /// The operator's window (`[http] listen`; "" turns it off).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub http_listen: String,
    /// The file to write.
    #[arg(short, long, value_name = "FILE", default_value = "blf-bridge.toml")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// The starter file's text.
pub fn starter(
    upstream: &str,
    domain: &str,
    accounts: &[(String, String)],
    lan_address: Option<&str>,
    listen: &str,
    http_listen: &str,
) -> String {
    let advertise = match lan_address {
        Some(a) => format!("advertise = \"{a}\"       # the phones' outbound proxy address"),
        None => "# advertise = \"192.168.1.10\"  # the bridge's LAN address (set it when udp is 0.0.0.0)".into(),
    };
    let mut s = format!(
        "# blf-bridge configuration, written by `blf-bridge init`.\n\
         # Every key with its default: blf-bridge.example.toml. Check: blf-bridge check --config FILE\n\
         \n\
         [listen]\n\
         udp = \"{listen}\"           # phones send SIP here (their outbound proxy)\n\
         {advertise}\n\
         \n\
         [upstream]\n\
         proxy = \"{upstream}\"   # the hosted PBX: host:port, no \"sip:\"\n\
         domain = \"{domain}\"    # the SIP domain of the accounts\n\
         transport = \"udp\"\n\
         \n\
         # Credentials the bridge uses for its own upstream SUBSCRIBEs (dialog + presence).\n\
         # The password comes from the environment variable (docker run --env-file ...).\n"
    );
    for (user, var) in accounts {
        s.push_str(&format!(
            "[[account]]\nuser = \"{user}\"\npassword_env = \"{var}\"\n\n"
        ));
    }
    s.push_str(&format!(
        "[http]\n\
         listen = \"{http_listen}\"  # lamp panel, /metrics, /readyz; \"\" turns it off\n\
         \n\
         # [security]\n\
         # allow = [\"192.168.1.0/24\"]  # who may use the bridge (default: private ranges + loopback)\n"
    ));
    s
}

fn ask(question: &str, default: Option<&str>) -> Option<String> {
    let mut err = std::io::stderr();
    let _ = match default {
        Some(d) => write!(err, "{question} [{d}]: "),
        None => write!(err, "{question}: "),
    };
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    let line = line.trim();
    if line.is_empty() {
        default.map(str::to_string)
    } else {
        Some(line.to_string())
    }
}

impl InitArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        let tty = std::io::stdin().is_terminal();
        let mut upstream = self.upstream.clone();
        let mut accounts = self.accounts.clone();
        let mut domain = self.domain.clone();
        let mut lan = self.lan_address.clone();
        if tty && (upstream.is_none() || accounts.is_empty()) {
            if upstream.is_none() {
                upstream = ask("PBX proxy (host:port, e.g. pbx.example.com:5060)", None);
            }
            if domain.is_none() {
                let host = upstream
                    .as_deref()
                    .and_then(|u| crate::config::split_host_port(u).ok())
                    .map(|(h, _)| h);
                domain = ask("SIP domain of the accounts", host.as_deref());
            }
            if accounts.is_empty() {
                accounts = ask("Account user(s), comma-separated (e.g. 1001)", None)
                    .map(|a| {
                        a.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
            }
            if lan.is_none() {
                lan = ask("The bridge's LAN address (empty: decide later)", None);
            }
        }
        let Some(upstream) = upstream.filter(|u| !u.trim().is_empty()) else {
            eprintln!(
                "init: --upstream is missing (the PBX's proxy, e.g. --upstream pbx.example.com:5060)"
            );
            return EXIT_CONFIG;
        };
        if accounts.is_empty() {
            eprintln!(
                "init: --account is missing (a user the bridge subscribes with, e.g. --account 1001 or --account 1001:BLF_PW_1001)"
            );
            return EXIT_CONFIG;
        }
        let domain = match domain.filter(|d| !d.trim().is_empty()) {
            Some(d) => d,
            None => match crate::config::split_host_port(&upstream) {
                Ok((h, _)) => h,
                Err(e) => {
                    eprintln!("init: --upstream {upstream}: {e}");
                    return EXIT_CONFIG;
                }
            },
        };
        let accounts: Vec<(String, String)> = accounts
            .iter()
            .map(|a| match a.split_once(':') {
                Some((u, v)) => (u.to_string(), v.to_string()),
                None => (a.clone(), format!("BLF_PW_{a}")),
            })
            .collect();
        if self.output.exists() && !self.force {
            eprintln!(
                "init: {} exists; keep it, or overwrite with --force",
                self.output.display()
            );
            return EXIT_CONFIG;
        }
        let text = starter(
            &upstream,
            &domain,
            &accounts,
            lan.as_deref().filter(|l| !l.is_empty()),
            &self.listen,
            &self.http_listen,
        );
        if let Err(e) = std::fs::write(&self.output, &text) {
            eprintln!("init: cannot write {}: {e}", self.output.display());
            return EXIT_FAILURE;
        }
        println!("wrote {}", self.output.display());
        // check it (without needing the passwords yet)
        let cfg = match load_lenient(&self.output) {
            Ok(c) => c,
            Err(code) => {
                eprintln!(
                    "init: fix the lines above in {} (or run init again with other answers)",
                    self.output.display()
                );
                return code;
            }
        };
        print!("{}", super::check::summary(&cfg));
        for (user, var) in &accounts {
            if std::env::var(var).is_err() {
                println!("  note: set {var} (the password of account {user}) before `run`");
            }
        }
        println!(
            "next: blf-bridge run --config {}   (then point the phones' outbound proxy at {})",
            self.output.display(),
            lan.as_deref()
                .filter(|l| !l.is_empty())
                .unwrap_or("this host")
        );
        EXIT_OK
    }
}
