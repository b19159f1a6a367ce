//! `blf-bridge run`: load the configuration, start the runtime, serve until
//! SIGINT/SIGTERM; SIGHUP reloads the configuration and the profiles.

use super::{ConfigArg, EXIT_FAILURE, EXIT_OK, GlobalOpts, init_logging};
use crate::runtime::{self, RuntimeOptions};
use clap::Args;
use std::sync::Arc;

/// Arguments of `blf-bridge run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

impl RunArgs {
    /// Exit code: 0 after a graceful stop, 2 for a bad configuration, 1 when the
    /// bridge cannot start (bind, resolve) or fails.
    pub fn execute(&self, global: &GlobalOpts) -> i32 {
        let (cfg, profiles) = match self.config.load_with_profiles() {
            Ok(c) => c,
            Err(code) => return code,
        };
        init_logging(global.log_format);
        crate::runtime::tune_allocator();
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return EXIT_FAILURE;
            }
        };
        let path = self.config.config.clone();
        let reloader: crate::runtime::Reloader = Arc::new(move || {
            let cfg = crate::config::Config::load(&path).map_err(|errors| {
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            let profiles = crate::profile::ProfileSet::load(cfg.profiles_dir.as_deref()).map_err(
                |errors| {
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            )?;
            if profiles.get(&cfg.default_profile).is_none() {
                return Err(format!(
                    "profiles.default: no profile named '{}'",
                    cfg.default_profile
                ));
            }
            Ok((Arc::new(cfg), Arc::new(profiles)))
        });
        let opts = RuntimeOptions {
            handle_signals: true,
            profiles: Some(Arc::new(profiles)),
            reloader: Some(reloader),
            ..RuntimeOptions::default()
        };
        let code = match rt.block_on(runtime::run(Arc::new(cfg), opts)) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                tracing::error!(error = %e, "blf-bridge failed");
                EXIT_FAILURE
            }
        };
        // Do not wait for connection tasks left over after the grace period.
        rt.shutdown_background();
        code
    }
}
