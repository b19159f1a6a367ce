//! The `blf-bridge` command line.
//!
//! Each subcommand is an `Args` struct with an `execute` method returning the
//! process exit code; adding one is a variant in [`Command`] and an arm in
//! [`Command::execute`].
//!
//! Exit codes: [`EXIT_OK`], [`EXIT_FAILURE`] (the bridge failed to start or
//! stopped abnormally), [`EXIT_CONFIG`] (bad configuration or usage).

mod check;
mod health;
mod http_get;
mod init;
mod logging;
mod profiles;
mod run;
mod status;

pub use check::CheckArgs;
pub use health::HealthArgs;
pub use init::InitArgs;
pub use logging::{LogFormat, init_logging};
pub use profiles::{ProfilesArgs, RenderArgs};
pub use run::RunArgs;
pub use status::StatusArgs;

use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Success.
pub const EXIT_OK: i32 = 0;
/// Runtime failure (cannot bind, cannot resolve the upstream, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Invalid configuration or command line.
pub const EXIT_CONFIG: i32 = 2;
/// `health`, `status`: the bridge does not answer at the address.
pub const EXIT_UNREACHABLE: i32 = 3;

const LONG_ABOUT: &str = "\
blf-bridge sits between BLF phones and a hosted PBX. It answers the phones' \
dialog SUBSCRIBEs itself, subscribes upstream to both `dialog` and `presence`, \
merges them and renders dialog-info each phone model understands, so offline \
extensions show up on the BLF keys. Everything else is proxied.

Start with `blf-bridge init` (writes blf-bridge.toml), `blf-bridge check --config FILE`, \
then `blf-bridge run --config FILE`; `blf-bridge status` and `blf-bridge health` ask the \
running bridge. \
Log verbosity follows RUST_LOG (default `info`, e.g. RUST_LOG=blf_bridge=debug); \
logs go to stderr.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "blf-bridge",
    version,
    about = "Subscription-translating SIP proxy: offline extensions on dialog-only BLF phones",
    long_about = LONG_ABOUT,
    propagate_version = true
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, env = "BLF_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge until SIGINT/SIGTERM.
    ///
    /// Exits 0 after a graceful stop, 1 when the bridge cannot start (a port in
    /// use, the upstream does not resolve) or fails, 2 for a bad configuration.
    Run(RunArgs),
    /// Validate a configuration file.
    ///
    /// Prints a short summary and exits 0, or prints each error as
    /// `file:line: message` on stderr and exits 2. Neither binds sockets nor
    /// resolves names.
    Check(CheckArgs),
    /// List the device profiles (built-in and from `[profiles] dir`) with their
    /// User-Agent patterns, in the order phones are matched.
    Profiles(ProfilesArgs),
    /// Print the exact NOTIFY body a phone of a given model gets for a state,
    /// so a profile can be checked without a phone.
    Render(RenderArgs),
    /// Ask a running bridge whether it is ready (`/readyz` of `[http] listen`;
    /// OPTIONS over UDP with --sip). Exits 0 ready, 1 not ready (reason
    /// printed), 2 bad configuration, 3 not reachable. Used by the container
    /// health check.
    Health(HealthArgs),
    /// Show what a running bridge watches: targets, their states and the
    /// phones watching them (from `/api/targets`). Exits 0, 1 on an HTTP
    /// error, 2 bad configuration, 3 not reachable.
    Status(StatusArgs),
    /// Write a commented starter configuration from a few answers (flags, or
    /// questions when run in a terminal) and check it.
    Init(InitArgs),
}

impl Command {
    /// Run the subcommand; returns the exit code.
    pub fn execute(self, global: &GlobalOpts) -> i32 {
        match self {
            Command::Run(a) => a.execute(global),
            Command::Check(a) => a.execute(global),
            Command::Profiles(a) => a.execute(global),
            Command::Render(a) => a.execute(global),
            Command::Health(a) => a.execute(global),
            Command::Status(a) => a.execute(global),
            Command::Init(a) => a.execute(global),
        }
    }
}

/// Options every subcommand sees.
#[derive(Debug, Clone, Copy)]
pub struct GlobalOpts {
    pub log_format: LogFormat,
}

/// `--config FILE`, shared by the subcommands that read a configuration.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Configuration file (TOML); see blf-bridge.example.toml.
    #[arg(short, long, value_name = "FILE", env = "BLF_BRIDGE_CONFIG")]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Load and validate the file; on failure print each error to stderr as
    /// `file:line: message` and return [`EXIT_CONFIG`].
    pub fn load(&self) -> Result<Config, i32> {
        if !self.config.exists() {
            eprintln!(
                "{}: no such file; make one with:\n  blf-bridge init --upstream pbx.example.com:5060 --account 1001 --lan-address 192.168.1.10 --output {}\n(or copy blf-bridge.example.toml)",
                self.config.display(),
                self.config.display()
            );
            return Err(EXIT_CONFIG);
        }
        if let Err(e) = std::fs::File::open(&self.config)
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            eprintln!(
                "{}: cannot read: {e}; the bridge runs as uid {}: make the file readable by it (e.g. chgrp {} FILE && chmod 0640 FILE)",
                self.config.display(),
                current_uid(),
                current_gid()
            );
            return Err(EXIT_CONFIG);
        }
        Config::load(&self.config).map_err(|errors| {
            for e in &errors {
                eprintln!("{e}");
            }
            EXIT_CONFIG
        })
    }

    /// Load the configuration and the profiles it points at (built-ins plus
    /// `[profiles] dir`); errors are printed as `file:line: message`.
    pub fn load_with_profiles(&self) -> Result<(Config, crate::profile::ProfileSet), i32> {
        let cfg = self.load()?;
        let profiles = load_profiles(cfg.profiles_dir.as_deref())?;
        if profiles.get(&cfg.default_profile).is_none() {
            eprintln!(
                "{}: profiles.default: no profile named '{}' (known: {})",
                cfg.source,
                cfg.default_profile,
                profiles.names().join(", ")
            );
            return Err(EXIT_CONFIG);
        }
        Ok((cfg, profiles))
    }
}

/// The process's uid and gid (from /proc; 0 when unknown), for the
/// unreadable-file hint.
fn current_uid() -> u32 {
    proc_status_id("Uid:")
}

fn current_gid() -> u32 {
    proc_status_id("Gid:")
}

fn proc_status_id(key: &str) -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Built-in profiles plus those in `dir`; errors printed, exit code returned.
pub fn load_profiles(dir: Option<&std::path::Path>) -> Result<crate::profile::ProfileSet, i32> {
    crate::profile::ProfileSet::load(dir).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        EXIT_CONFIG
    })
}

/// The `blf-bridge` binary: parse `std::env::args`, run, return the exit code.
pub fn main() -> i32 {
    main_from(std::env::args_os())
}

/// [`main`] with explicit arguments (the first is the program name).
pub fn main_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => {
            let global = GlobalOpts {
                log_format: cli.log_format,
            };
            cli.command.execute(&global)
        }
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let _ = e.print();
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands_and_global_log_format() {
        let cli = Cli::try_parse_from([
            "blf-bridge",
            "run",
            "--config",
            "x.toml",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        match cli.command {
            Command::Run(a) => assert_eq!(a.config.config, PathBuf::from("x.toml")),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["blf-bridge", "check", "-c", "y.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Check(_)));
        let e = Cli::try_parse_from(["blf-bridge", "run", "--config", "x", "--log-format", "xml"])
            .unwrap_err();
        assert_eq!(e.exit_code(), EXIT_CONFIG);
        let e = Cli::try_parse_from(["blf-bridge"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_CONFIG);
    }

    #[test]
    fn missing_config_file_exits_2() {
        assert_eq!(
            main_from([
                "blf-bridge",
                "check",
                "--config",
                "/nonexistent/blf-bridge.toml"
            ]),
            EXIT_CONFIG
        );
    }
}
