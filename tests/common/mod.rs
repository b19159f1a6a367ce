//! End-to-end test harness shared by the integration tests (`mod common;`).
//!
//! It runs the real programs the bridge sits between, all on 127.0.0.1:
//! - [`Kamailio`]: the "hosted PBX" (tests/harness/kamailio.cfg) on a free port, with
//!   its own run directory (SQLite DB with users 1001..1003, ctl socket, log);
//! - [`Bridge`]: the `blf-bridge` binary of this crate with a given TOML config;
//! - [`Sipp`]: SIPp "phones" playing the scenarios in tests/harness/scenarios/,
//!   with parsers for their `-trace_msg` logs ([`TraceMsg`], [`Notify`]).
//!
//! Everything is bounded (every wait has a deadline), every process runs in its own
//! process group and is killed with it on drop (also when the test panics), every
//! run gets a unique temporary directory (kept and printed when the test fails, or
//! always with `BLF_KEEP_TMP=1`), and no port is fixed: [`free_port`] hands out ports
//! that are free on UDP and TCP. Nothing here depends on files outside the repository
//! except the installed tools (sipp, kamailio, kamcmd, sqlite3 and the Kamailio
//! SQLite schema in /usr/share/kamailio/db_sqlite).
//!
//! Tests call [`e2e_ready`] first: when the tools are missing it prints a loud SKIPPED
//! banner and returns false, unless `BLF_REQUIRE_E2E` is set (CI), where it panics.

//! By concern:
//! - `tools`: repository paths, installed tools, the [`e2e_ready`] gate;
//! - `tmp`: [`TempDir`];
//! - `process`: free ports, bounded waits and commands, process groups;
//! - `relay`: [`UdpRelay`], a seeded lossy UDP relay (drop, duplicate, reorder);
//! - `watcher`: [`BlfPhone`], a BLF phone in a thread that copes with a lossy network;
//! - `sip_client`: raw SIP requests and OPTIONS probes from a private socket;
//! - `kamailio`: the harness PBX and its users ([`DOMAIN`], [`USERS`]);
//! - `bridge`: the bridge binary and [`bridge_config`];
//! - `sipp`: [`SippCmd`] / [`Sipp`];
//! - `netns`: [`Site`], a customer site behind NAT in network namespaces
//!   (tests/netns/site.sh), and the [`netns_ready`] gate;
//! - `lamp`: what a NOTIFY shows on a key, per profile ([`label`], [`wait_lamp`]);
//! - `trace`: `-trace_msg` parsing ([`parse_trace`], [`notifies`]);
//! - `xml`: the minimal XML scanning behind [`Notify`]'s accessors;
//! - `dnsmasq`: [`Dnsmasq`], a DNS server with the records a test gives;
//! - `testca`: [`Ca`], a certificate authority made in the test (TLS).
//!
//! Every test crate that says `mod common;` compiles all of it and uses a part, so
//! the modules with APIs that some crate leaves unused (`kamailio`, `bridge`, `sipp`,
//! `trace`, `xml`) allow dead code, and the re-exports below allow being unused.

mod bridge;
mod dnsmasq;
mod kamailio;
mod lamp;
mod netns;
mod process;
mod relay;
mod sip_client;
mod sipp;
mod testca;
mod tmp;
mod tools;
mod trace;
mod watcher;
mod xml;

// One flat namespace, as before the split: `use common::*;` in the test crates.
#[allow(unused_imports)]
pub use {
    bridge::*, dnsmasq::*, kamailio::*, lamp::*, netns::*, process::*, relay::*, sip_client::*,
    sipp::*, testca::*, tmp::*, tools::*, trace::*, watcher::*,
};
