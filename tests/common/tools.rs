//! Paths of the repository and the harness, the installed tools, and the gate every
//! end-to-end test passes first ([`e2e_ready`]).

use super::kamailio::{KAMAILIO_SCHEMA_DIR, KAMAILIO_SCHEMAS};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Debian packages that provide the tools (what `scripts/test` installs).
pub const E2E_PACKAGES: &str = "sip-tester kamailio kamailio-presence-modules kamailio-sqlite-modules kamailio-tls-modules sqlite3 dnsmasq-base iproute2 iptables conntrack chromium chromium-driver";

/// Root of this repository (the crate directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tests/harness/ (Kamailio config, users, scenarios).
pub fn harness_dir() -> PathBuf {
    repo_root().join("tests").join("harness")
}

/// Absolute path of a scenario in tests/harness/scenarios/ (a path containing `/` is
/// taken as is).
pub fn scenario_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        harness_dir().join("scenarios").join(name)
    }
}

/// Find an executable in PATH (plus /usr/sbin and /sbin, where Debian puts kamailio).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

pub(super) fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} not found in PATH (install: apt-get install -y --no-install-recommends {E2E_PACKAGES})")
    })
}

/// True when `BLF_REQUIRE_E2E` is set to anything but "" or "0".
pub fn e2e_required() -> bool {
    std::env::var("BLF_REQUIRE_E2E").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The tools an end-to-end test needs that are not installed.
pub fn missing_e2e_tools() -> Vec<String> {
    let mut missing: Vec<String> = ["sipp", "kamailio", "kamcmd", "sqlite3"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .map(String::from)
        .collect();
    if find_tool("kamailio").is_some()
        && !Path::new(KAMAILIO_SCHEMA_DIR)
            .join(KAMAILIO_SCHEMAS[0])
            .is_file()
    {
        missing.push(format!("{KAMAILIO_SCHEMA_DIR} (kamailio-sqlite-modules)"));
    }
    missing
}

/// Call at the start of every end-to-end test: `if !common::e2e_ready("name") { return; }`.
///
/// Returns true when sipp, kamailio, kamcmd and sqlite3 are installed. Otherwise prints
/// a loud SKIPPED banner and returns false — or panics when `BLF_REQUIRE_E2E` is set,
/// so that CI cannot silently skip the end-to-end tests.
pub fn e2e_ready(test: &str) -> bool {
    let missing = missing_e2e_tools();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "end-to-end test `{test}` needs: {} (install: apt-get install -y --no-install-recommends {E2E_PACKAGES}, or run scripts/test)",
        missing.join(", ")
    );
    if e2e_required() {
        panic!("BLF_REQUIRE_E2E is set but {msg}");
    }
    // straight to the stderr handle: the test harness captures eprintln! of passing tests
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!! SKIPPED: {msg}\n!! Set BLF_REQUIRE_E2E=1 to turn this into a failure.\n{bar}\n",
        bar = "!".repeat(78)
    );
    false
}

/// Kamailio's TLS module (kamailio-tls-modules), if installed.
#[allow(dead_code)] // only the TLS test crates use it
pub fn kamailio_tls_module() -> Option<PathBuf> {
    let lib = Path::new("/usr/lib");
    let arch_dirs = std::fs::read_dir(lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    std::iter::once(lib.to_path_buf())
        .chain(arch_dirs)
        .map(|d| d.join("kamailio/modules/tls.so"))
        .find(|p| p.is_file())
}

/// [`e2e_ready`] plus Kamailio's TLS module: the TLS end-to-end tests call this.
#[allow(dead_code)]
pub fn tls_e2e_ready(test: &str) -> bool {
    if !e2e_ready(test) {
        return false;
    }
    if kamailio_tls_module().is_some() {
        return true;
    }
    let msg = format!(
        "end-to-end test `{test}` needs Kamailio's tls.so (install: apt-get install -y --no-install-recommends kamailio-tls-modules)"
    );
    if e2e_required() {
        panic!("BLF_REQUIRE_E2E is set but {msg}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!! SKIPPED: {msg}\n!! Set BLF_REQUIRE_E2E=1 to turn this into a failure.\n{bar}\n",
        bar = "!".repeat(78)
    );
    false
}
