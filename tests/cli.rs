//! The `blf-bridge` binary as an operator uses it: --version, --help, `check`
//! on good and bad files, and `run` serving OPTIONS on loopback until SIGTERM.
//! Waits are bounded; nothing asserts on timing.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blf-bridge");
const WAIT: Duration = Duration::from_secs(15);

fn bridge(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("BLF_LOG_FORMAT")
        .env_remove("BLF_BRIDGE_CONFIG")
        .output()
        .expect("the binary runs")
}

/// A fresh file under the test target directory.
fn write_file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn config_text(udp_port: u16, upstream_port: u16) -> String {
    format!(
        "[listen]\nudp = \"127.0.0.1:{udp_port}\"\n\n[upstream]\nproxy = \"127.0.0.1:{upstream_port}\"\n\
         domain = \"pbx.test\"\n\n[[account]]\nuser = \"1001\"\npassword = \"secret\"\n"
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let out = bridge(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("blf-bridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_subcommands_and_options() {
    let out = bridge(&["--help"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for needle in ["run", "check", "--log-format", "RUST_LOG", "BLF_LOG_FORMAT"] {
        assert!(s.contains(needle), "--help lacks {needle}:\n{s}");
    }
    let out = bridge(&["run", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--config <FILE>"));
}

#[test]
fn usage_errors_exit_2() {
    let out = bridge(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = bridge(&["run"]);
    assert_eq!(out.status.code(), Some(2), "run without --config");
    assert!(text(&out.stderr).contains("--config"));
}

#[test]
fn check_accepts_a_good_config() {
    let p = write_file("good.toml", &config_text(5060, 5070));
    let out = bridge(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains(": OK"), "{s}");
    assert!(s.contains("127.0.0.1:5070"), "{s}");
    assert!(!s.contains("secret"), "no passwords in the summary: {s}");
}

#[test]
fn the_example_config_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("blf-bridge.example.toml");
    let out = bridge(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pbx.example.com"));
}

#[test]
fn check_reports_errors_with_file_and_line() {
    // line 2: not an address; line 8: unknown transport
    let bad = config_text(5060, 5070)
        .replace("udp = \"127.0.0.1:5060\"", "udp = \"nowhere\"")
        .replace(
            "domain = \"pbx.test\"\n",
            "domain = \"pbx.test\"\ntransport = \"sctp\"\n",
        );
    let p = write_file("bad.toml", &bad);
    let path = p.to_str().unwrap();
    let out = bridge(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{path}:2: listen.udp")), "{err}");
    assert!(
        err.contains(&format!("{path}:7: upstream.transport")),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let missing = format!("{path}.does-not-exist");
    let out = bridge(&["check", "--config", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&missing));
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let until = Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("blf-bridge did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn options(local: SocketAddr) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-cli\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@pbx.test>;tag=x\r\nTo: <sip:bridge@127.0.0.1>\r\n\
         Call-ID: cli-run\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn run_serves_options_and_stops_on_sigterm() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap(); // stands in for the PBX
    let port = free_udp_port();
    let cfg = write_file(
        "run.toml",
        &config_text(port, upstream.local_addr().unwrap().port()),
    );
    let log = write_file("run.log", "");
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("BLF_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Retry until the bridge is up; each attempt waits for a reply.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = options(c.local_addr().unwrap());
    let bridge_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    let reply = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bridge exited early: {}",
            text(&std::fs::read(&log).unwrap())
        );
        assert!(Instant::now() < until, "no reply from the bridge");
        c.send_to(req.as_bytes(), bridge_addr).unwrap();
        if let Ok((n, from)) = c.recv_from(&mut buf) {
            assert_eq!(from, bridge_addr);
            break text(&buf[..n]);
        }
    };
    assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");
    assert!(reply.contains("Call-ID: cli-run"), "{reply}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let st = wait_exit(&mut child);
    let logs = text(&std::fs::read(&log).unwrap());
    assert_eq!(st.code(), Some(0), "logs:\n{logs}");
    assert!(logs.contains("blf-bridge started"), "{logs}");
    assert!(logs.contains(&format!("udp=127.0.0.1:{port}")), "{logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[test]
fn run_exits_1_when_the_port_is_taken_and_logs_json() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write_file("taken.toml", &config_text(port, 9));
    let out = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env("BLF_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("\"level\":\"ERROR\""))
        .unwrap_or_else(|| panic!("no JSON error line in:\n{err}"));
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    drop(taken);
}

#[test]
fn run_with_a_bad_config_exits_2() {
    let p = write_file("bad-run.toml", "[listen]\nudp = 5\n");
    let out = bridge(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{}:2:", p.display())));
}

#[test]
fn check_reports_a_malformed_profile_with_file_and_line() {
    let dir = write_file("placeholder", "")
        .parent()
        .unwrap()
        .join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    // a copy of the Wave profile under another name, with one bad state value
    let wave = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/grandstream-wave.toml"),
    )
    .unwrap()
    .replace("name = \"grandstream-wave\"", "name = \"desk\"");
    let bad_at = wave
        .find("state = \"confirmed\"")
        .expect("a confirmed state");
    let bad_line = wave[..bad_at].lines().count() + 1;
    let bad = format!(
        "{}state = \"bsy\"{}",
        &wave[..bad_at],
        &wave[bad_at + "state = \"confirmed\"".len()..]
    );
    std::fs::write(dir.join("desk.toml"), &bad).unwrap();
    let cfg = write_file(
        "bridge.toml",
        &format!(
            "{}\n[profiles]\ndir = \"{}\"\n",
            config_text(5060, 5070),
            dir.display()
        ),
    );
    let out = bridge(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let file = dir.join("desk.toml");
    assert!(
        err.contains(&format!("{}:{bad_line}:", file.display())),
        "file:line of the bad state value: {err}"
    );
    assert!(err.contains("bsy"), "{err}");
    // `run` refuses to start with it too
    let out = bridge(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    // and a good override is listed by `profiles`
    std::fs::write(
        dir.join("desk.toml"),
        std::fs::read_to_string(dir.join("desk.toml"))
            .unwrap()
            .replace("bsy", "terminated"),
    )
    .unwrap();
    let out = bridge(&["profiles", "--dir", dir.to_str().unwrap()]);
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(listing.contains("desk"), "{listing}");
}

#[test]
fn render_prints_the_profile_document() {
    let out = bridge(&[
        "render",
        "--profile",
        "grandstream-gxp",
        "--state",
        "offline",
        "--entity",
        "sip:2001@example.org",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body = text(&out.stdout);
    assert!(body.contains("entity=\"sip:2001@example.org\""), "{body}");
    assert!(body.contains("display=\"Offline\""), "{body}");
    assert!(body.contains("<state>confirmed</state>"), "{body}");
    let out = bridge(&["render", "--profile", "yealink", "--state", "offline"]);
    assert!(text(&out.stdout).contains("terminated;reason=probation"));
    let out = bridge(&["render", "--profile", "nosuch", "--state", "idle"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("grandstream-gxp"),
        "lists the valid names"
    );
    let out = bridge(&["profiles"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    for p in [
        "grandstream-gxp",
        "grandstream-wave",
        "yealink",
        "snom",
        "zoiper",
        "generic",
    ] {
        assert!(listing.contains(p), "{listing}");
    }
}

/// Start `blf-bridge run` with `cfg`, stderr to `log`; wait until it answers an
/// OPTIONS on `port`.
fn start_bridge(cfg: &Path, log: &Path, port: u16) -> Child {
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("BLF_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        answers_options(port, &mut child, log),
        "no reply from the bridge"
    );
    child
}

fn answers_options(port: u16, child: &mut Child, log: &Path) -> bool {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = options(c.local_addr().unwrap());
    let until = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        assert!(
            child.try_wait().unwrap().is_none(),
            "bridge exited early: {}",
            text(&std::fs::read(log).unwrap())
        );
        c.send_to(req.as_bytes(), ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            return text(&buf[..n]).starts_with("SIP/2.0 200 ");
        }
    }
    false
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn wait_log(log: &Path, needle: &str) -> String {
    let until = Instant::now() + WAIT;
    loop {
        let logs = text(&std::fs::read(log).unwrap());
        if logs.contains(needle) || Instant::now() > until {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn state_dir_beside_the_config_holds_the_key_0600_and_a_second_bridge_is_refused() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free_udp_port();
    let cfg = write_file(
        "state.toml",
        &config_text(port, upstream.local_addr().unwrap().port()),
    );
    let log = cfg.with_file_name("state.log");
    let mut child = start_bridge(&cfg, &log, port);
    let state = cfg.with_file_name("state");
    let key = state.join("flow-token.key");
    assert!(state.join("state.redb").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode");
    }
    let k1 = std::fs::read_to_string(&key).unwrap();
    assert_eq!(k1.trim().len(), 64);

    // a second bridge on the same state directory (another port) is refused
    let cfg2 = cfg.with_file_name("state2.toml");
    std::fs::write(
        &cfg2,
        config_text(free_udp_port(), upstream.local_addr().unwrap().port()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", cfg2.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("another process"), "{err}");

    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    // the key is kept across a restart
    let mut child = start_bridge(&cfg, &log, port);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), k1);
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_running_configuration() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free_udp_port();
    let good = config_text(port, upstream.local_addr().unwrap().port());
    let cfg = write_file("hup.toml", &good);
    let log = cfg.with_file_name("hup.log");
    let mut child = start_bridge(&cfg, &log, port);

    signal(&child, "-HUP");
    let logs = wait_log(&log, "configuration and profiles reloaded");
    assert!(
        logs.contains("SIGHUP: configuration and profiles reloaded"),
        "{logs}"
    );

    std::fs::write(&cfg, "[listen\nudp = ").unwrap();
    signal(&child, "-HUP");
    let logs = wait_log(&log, "reload failed");
    assert!(
        logs.contains("SIGHUP: reload failed, keeping the running configuration"),
        "{logs}"
    );
    assert!(
        answers_options(port, &mut child, &log),
        "still serving after a failed reload"
    );
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}
