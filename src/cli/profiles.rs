//! `blf-bridge profiles` and `blf-bridge render`: inspect device profiles
//! without a phone.

use super::{EXIT_CONFIG, EXIT_OK, GlobalOpts, load_profiles};
use crate::profile::{list_text, render_text};
use clap::Args;
use std::path::PathBuf;

/// Where to find extra profiles: `--config` (its `[profiles] dir`) or `--dir`.
#[derive(Debug, Clone, Args)]
pub struct ProfileSource {
    /// Read `[profiles] dir` from this configuration file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// A directory of extra/override profile files.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl ProfileSource {
    fn load(&self) -> Result<crate::profile::ProfileSet, i32> {
        let dir = match (&self.config, &self.dir) {
            (Some(c), _) => {
                // only [profiles] dir is needed: no account passwords
                let cfg = super::http_get::load_lenient(c)?;
                cfg.profiles_dir
            }
            (None, d) => d.clone(),
        };
        load_profiles(dir.as_deref())
    }
}

/// Arguments of `blf-bridge profiles`.
#[derive(Debug, Clone, Args)]
pub struct ProfilesArgs {
    #[command(flatten)]
    pub source: ProfileSource,
}

impl ProfilesArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        match self.source.load() {
            Ok(set) => {
                print!("{}", list_text(&set));
                EXIT_OK
            }
            Err(code) => code,
        }
    }
}

/// Arguments of `blf-bridge render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Profile name (see `blf-bridge profiles`).
    #[arg(long, short = 'p')]
    pub profile: String,
    /// Merged state: unknown, offline, idle, ringing, busy or held.
    #[arg(long, short = 's')]
    pub state: String,
    /// Display name of the other party in a call (ringing, busy, held).
    #[arg(long)]
    pub remote_display: Option<String>,
    /// The watched extension's AOR (the document's entity).
    #[arg(long, default_value = "sip:1002@pbx.example.com")]
    pub entity: String,
    /// dialog-info version to print.
    #[arg(long = "doc-version", default_value_t = 0)]
    pub doc_version: u32,
    #[command(flatten)]
    pub source: ProfileSource,
}

impl RenderArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        let set = match self.source.load() {
            Ok(s) => s,
            Err(code) => return code,
        };
        match render_text(
            &set,
            &self.profile,
            &self.state,
            self.remote_display.as_deref(),
            &self.entity,
            self.doc_version,
        ) {
            Ok(text) => {
                print!("{text}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("{e}");
                EXIT_CONFIG
            }
        }
    }
}
