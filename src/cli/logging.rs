//! tracing-subscriber set-up: `RUST_LOG`-style filter (default `info`), text or
//! JSON lines, on stderr.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Install the global subscriber. The filter comes from `RUST_LOG` (default
/// `info`); an invalid `RUST_LOG` falls back to `info` with a note on stderr.
/// Calling it twice keeps the first subscriber.
pub fn init_logging(format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("blf-bridge: ignoring invalid RUST_LOG '{spec}': {e}");
                EnvFilter::new("info")
            }
        },
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colours only for a terminal, never into files or journald
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("blf-bridge: logging already initialised: {e}");
    }
}
