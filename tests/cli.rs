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
    assert!(
        s.contains("resolved:      IP literal"),
        "check says what the proxy resolved to: {s}"
    );
    assert!(!s.contains("secret"), "no passwords in the summary: {s}");
}

#[test]
fn check_reports_a_resolution_failure_with_file_and_line() {
    // a DNS server that never answers (a bound UDP socket nobody reads)
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:5060\"\n[upstream]\nproxy = \"pbx.test\"\ndomain = \"pbx.test\"\n\
         dns = \"{}\"\n[[account]]\nuser = \"1001\"\npassword = \"x\"\n",
        silent.local_addr().unwrap()
    );
    let (code, path, lines) = check_text("unresolvable.toml", &text);
    assert_eq!(code, Some(2), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{path}:4: upstream.proxy: cannot resolve"))),
        "{lines:?}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("blf-bridge.example.toml");
    // pbx.example.com does not resolve: DNS skipped
    let out = bridge(&["check", "--offline", "--config", p.to_str().unwrap()]);
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

// ------------------------------------------------ check: every mistake, one run

/// `check` on `text`: (exit code, stderr lines).
fn check_text(name: &str, text: &str) -> (Option<i32>, String, Vec<String>) {
    let p = write_file(name, text);
    let path = p.to_str().unwrap().to_string();
    let out = bridge(&["check", "--config", &path]);
    let err = self::text(&out.stderr);
    let lines = err.lines().map(str::to_string).collect();
    (out.status.code(), path, lines)
}

const BASE: &str = "[listen]\nudp = \"127.0.0.1:5060\"\n\n[upstream]\nproxy = \"pbx.example.com:5060\"\n\
                    domain = \"pbx.example.com\"\n\n[[account]]\nuser = \"1001\"\npassword = \"secret\"\n";

#[test]
fn check_no_account_is_an_error() {
    let text = BASE.replace("[[account]]\nuser = \"1001\"\npassword = \"secret\"\n", "");
    let (code, path, lines) = check_text("noaccount.toml", &text);
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [
            format!(
                "{path}:6: account: no [[account]]; the bridge subscribes upstream with these credentials (without one the PBX refuses every subscription and keys stay idle), add:"
            ),
            "  [[account]]".to_string(),
            "  user = \"1001\"".to_string(),
            "  password_env = \"BLF_PW_1001\"".to_string(),
        ]
    );
}

#[test]
fn check_reports_every_syntax_error() {
    let (code, path, lines) = check_text(
        "syntax.toml",
        "[listen\nudp = \"127.0.0.1:5060\"\n[upstream]\nproxy = \"pbx\n[[account]]\nuser = \"1001\"\n",
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [
            format!(
                "{path}:1: TOML syntax: unclosed table, expected `]` (sections are [name], keys are name = value, strings in \"quotes\")"
            ),
            format!(
                "{path}:4: TOML syntax: invalid basic string, expected `\"` (sections are [name], keys are name = value, strings in \"quotes\")"
            ),
        ]
    );
}

#[test]
fn check_reports_every_type_error_with_its_key() {
    let text = BASE
        .replace("udp = \"127.0.0.1:5060\"", "udp = 5060\ntcpp = \"x\"")
        .replace(
            "[[account]]",
            "[subscriptions]\nmin_expires = \"60\"\n\n[[account]]",
        )
        + "\n[proxy]\npath = \"yes\"\n\n[security]\nallow = \"10.0.0.0/8\"\n";
    let (code, path, lines) = check_text("types.toml", &text);
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [
            format!(
                "{path}:2: listen.udp: invalid type: integer `5060`, expected a string (write it in quotes: udp = \"...\")"
            ),
            format!(
                "{path}:3: listen.tcpp: unknown key; expected one of `udp`, `tcp`, `advertise` (check the spelling)"
            ),
            format!(
                "{path}:10: subscriptions.min_expires: invalid type: string \"60\", expected u32 (write a whole number without quotes: min_expires = 60)"
            ),
            format!(
                "{path}:17: proxy.path: invalid type: string \"yes\", expected a boolean (write path = true or path = false, without quotes)"
            ),
            format!(
                "{path}:20: security.allow: invalid type: string \"10.0.0.0/8\", expected a sequence (write a list: allow = [\"...\", \"...\"])"
            ),
        ]
    );
}

#[test]
fn check_account_as_a_single_table_says_double_brackets() {
    let (code, path, lines) = check_text(
        "single-account.toml",
        &BASE.replace("[[account]]", "[account]"),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:8: account: accounts are a list; write [[account]] (double brackets), one block per account"
        )]
    );
}

#[test]
fn check_proxy_with_a_sip_scheme() {
    let (code, path, lines) = check_text(
        "scheme.toml",
        &BASE.replace("pbx.example.com:5060\"", "sip:pbx.example.com:5060\""),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:5: upstream.proxy: 'sip:pbx.example.com:5060' is a URI; proxy takes host:port without \"sip:\", write proxy = \"pbx.example.com:5060\""
        )]
    );
}

#[test]
fn check_proxy_with_a_doubled_port() {
    let (code, path, lines) = check_text(
        "doubled.toml",
        &BASE.replace("pbx.example.com:5060\"", "pbx.example.com:5060:5060\""),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:5: upstream.proxy: 'pbx.example.com:5060:5060' is not host:port (more than one port?), write proxy = \"pbx.example.com:5060\""
        )]
    );
}

#[test]
fn check_advertise_with_a_port() {
    let (code, path, lines) = check_text(
        "advertise.toml",
        &BASE.replace(
            "udp = \"127.0.0.1:5060\"",
            "udp = \"0.0.0.0:5060\"\nadvertise = \"192.168.1.10:5060\"",
        ),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:3: listen.advertise: '192.168.1.10:5060' has a port; advertise takes only the host (the port comes from [listen] udp/tcp), write advertise = \"192.168.1.10\""
        )]
    );
}

#[test]
fn check_empty_allow_list() {
    let (code, path, lines) =
        check_text("allow.toml", &format!("{BASE}\n[security]\nallow = []\n"));
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:13: security.allow: an empty list refuses every phone (each gets 403); remove the key for the default (private ranges and loopback) or list your networks, e.g. allow = [\"192.168.1.0/24\"]"
        )]
    );
}

#[test]
fn check_duplicate_account() {
    let (code, path, lines) = check_text(
        "dup.toml",
        &format!("{BASE}\n[[account]]\nuser = \"1001\"\npassword = \"other\"\n"),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:13: account.user: '1001' is already an account (line 9); each [[account]] needs its own user, remove or rename one"
        )]
    );
}

#[test]
fn check_absurd_first_notify_timeout() {
    let (code, path, lines) = check_text(
        "timeout.toml",
        &format!("{BASE}\n[subscriptions]\nfirst_notify_timeout_ms = 99999999\n"),
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        lines,
        [format!(
            "{path}:13: subscriptions.first_notify_timeout_ms: 99999999 ms would leave phones without a first NOTIFY far past their SUBSCRIBE timeout; write at most 60000 (the default, 2000, suits every PBX)"
        )]
    );
}

#[test]
fn check_reports_all_the_mistakes_in_one_run() {
    let text = "[listen]\nudp = \"0.0.0.0:5060\"\nadvertise = \"192.168.1.10:5060\"\n\n[upstream]\n\
                proxy = \"sip:pbx.example.com:5060\"\ndomain = \"pbx.example.com\"\n\n\
                [subscriptions]\nfirst_notify_timeout_ms = 99999999\nmin_expires = \"60\"\n\n\
                [security]\nallow = []\n";
    let (code, path, lines) = check_text("all.toml", text);
    assert_eq!(code, Some(2));
    let starts: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with(&path))
        .map(|l| {
            l[path.len()..]
                .split(": ")
                .take(2)
                .collect::<Vec<_>>()
                .join(": ")
        })
        .collect();
    assert_eq!(
        starts,
        [
            ":3: listen.advertise",
            ":6: upstream.proxy",
            ":10: subscriptions.first_notify_timeout_ms",
            ":11: subscriptions.min_expires",
            ":14: security.allow",
            ":14: account",
        ],
        "{lines:#?}"
    );
}

#[test]
fn check_resolves_a_relative_profiles_dir_from_the_config_files_directory() {
    let cfg = write_file(
        "bridge.toml",
        &format!("{BASE}\n[profiles]\ndir = \"myprofiles\"\n"),
    );
    let dir = cfg.parent().unwrap();
    std::fs::create_dir_all(dir.join("myprofiles")).unwrap();
    let wave = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/grandstream-wave.toml"),
    )
    .unwrap()
    .replace("name = \"grandstream-wave\"", "name = \"desk\"");
    std::fs::write(dir.join("myprofiles/desk.toml"), wave).unwrap();
    // run from elsewhere: the directory is found beside the file, not in the cwd
    let out = Command::new(BIN)
        .args(["check", "--offline", "--config", cfg.to_str().unwrap()])
        .current_dir("/")
        .env_remove("BLF_BRIDGE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains(&format!("built-in + {}", dir.join("myprofiles").display())),
        "{s}"
    );
    assert!(s.contains("desk"), "{s}");
}

// ------------------------------------------------------ init, run, health, status

#[test]
fn run_without_a_config_file_says_how_to_make_one() {
    let p = write_file("x", "").with_file_name("absent.toml");
    let out = bridge(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}: no such file; make one with:\n  blf-bridge init ",
            p.display()
        )),
        "{err}"
    );
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn init_then_check_then_run_with_no_other_file() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap(); // stands in for the PBX
    let (port, http) = (free_udp_port(), free_tcp_port());
    let cfg = write_file("x", "").with_file_name("blf-bridge.toml");
    let out = bridge(&[
        "init",
        "--upstream",
        &format!("127.0.0.1:{}", upstream.local_addr().unwrap().port()),
        "--domain",
        "pbx.test",
        "--account",
        "1001:CLI_TEST_PW_1001",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--output",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains(": OK\n"), "{s}");
    assert!(s.contains("note: set CLI_TEST_PW_1001"), "{s}");
    let written = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        written.contains("password_env = \"CLI_TEST_PW_1001\""),
        "{written}"
    );
    assert!(
        written.lines().filter(|l| l.starts_with('#')).count() >= 3,
        "commented: {written}"
    );
    // a short keep-alive, so readiness follows the fake PBX within the test
    std::fs::write(
        &cfg,
        written.replace(
            "transport = \"udp\"",
            "transport = \"udp\"\nkeepalive_interval = 5",
        ),
    )
    .unwrap();
    // a second init does not overwrite
    let again = bridge(&[
        "init",
        "--upstream",
        "x",
        "--account",
        "1",
        "-o",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));

    // health without the password variable: not a configuration error
    let out = bridge(&[
        "health",
        "--config",
        cfg.to_str().unwrap(),
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not running = not reachable: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("not reachable"));
    let out = bridge(&["status", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));

    // check (with the password), then run
    let out = Command::new(BIN)
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env("CLI_TEST_PW_1001", "secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = cfg.with_file_name("run.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("CLI_TEST_PW_1001", "secret")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(answers_options(port, &mut child, &log), "OPTIONS answered");

    // health asks /readyz: the fake PBX does not answer yet, so not ready (1), reason printed
    let out = bridge(&["health", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("/readyz: 503 not ready"),
        "{}",
        text(&out.stderr)
    );
    // the PBX answers from now on: ready (0) after the next keep-alive (5 s)
    let pbx = fake_pbx(upstream);
    let until = Instant::now() + WAIT;
    loop {
        let out = bridge(&["health", "--config", cfg.to_str().unwrap()]);
        if out.status.code() == Some(0) {
            assert!(
                text(&out.stdout).contains("/readyz: ready"),
                "{}",
                text(&out.stdout)
            );
            break;
        }
        assert!(Instant::now() < until, "never ready: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(250));
    }
    // a phone's REGISTER is relayed and logged at the default level
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let reg = format!(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-reg1\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@pbx.test>;tag=r1\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: cli-reg\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:1001@{}>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n",
        phone.local_addr().unwrap(),
        phone.local_addr().unwrap()
    );
    phone.send_to(reg.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = phone.recv_from(&mut buf).expect("REGISTER answered");
    assert!(
        text(&buf[..n]).starts_with("SIP/2.0 200"),
        "{}",
        text(&buf[..n])
    );
    let logs = wait_log(&log, "REGISTER relayed");
    let line = logs
        .lines()
        .find(|l| l.contains("REGISTER relayed"))
        .unwrap_or_default();
    assert!(
        line.contains(" INFO ") && line.contains("code=200"),
        "{logs}"
    );
    assert!(
        line.contains("user=sip:1001@pbx.test") || line.contains("user=1001"),
        "{line}"
    );
    assert!(
        line.contains(&phone.local_addr().unwrap().to_string()),
        "source: {line}"
    );
    drop(pbx);
    // the SIP probe answers
    let out = bridge(&["health", "--sip", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // status prints the table header
    let out = bridge(&["status", "--url", &format!("http://127.0.0.1:{http}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("upstream: "),
        "{}",
        text(&out.stdout)
    );

    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// A stand-in PBX answering every request with 200 (Via, From, To, Call-ID,
/// CSeq copied), until dropped.
struct FakePbx(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for FakePbx {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn fake_pbx(sock: UdpSocket) -> FakePbx {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while !s2.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let req = text(&buf[..n]);
            if req.starts_with("SIP/2.0") || req.trim().is_empty() {
                continue;
            }
            let mut resp = String::from("SIP/2.0 200 OK\r\n");
            for l in req.lines() {
                let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                if [
                    "via", "v", "from", "f", "call-id", "i", "cseq", "contact", "m", "path",
                ]
                .contains(&name.as_str())
                {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                } else if name == "to" || name == "t" {
                    resp.push_str(l);
                    resp.push_str(";tag=pbx\r\n");
                }
            }
            resp.push_str("Expires: 300\r\nContent-Length: 0\r\n\r\n");
            let _ = sock.send_to(resp.as_bytes(), from);
        }
    });
    FakePbx(stop)
}

#[test]
fn health_and_status_exit_codes() {
    // nothing listens: 3
    let dead = format!("http://127.0.0.1:{}", free_tcp_port());
    let out = bridge(&["health", "--url", &dead]);
    assert_eq!(out.status.code(), Some(3));
    let out = bridge(&["status", "--url", &dead]);
    assert_eq!(out.status.code(), Some(3));
    // bad URL / bad config: 2
    let out = bridge(&["health", "--url", "https://x"]);
    assert_eq!(out.status.code(), Some(2));
    let p = write_file("bad-health.toml", "[listen]\nudp = 5\n");
    let out = bridge(&["health", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    // documented in --help
    for cmd in ["health", "status"] {
        let help = text(&bridge(&[cmd, "--help"]).stdout);
        assert!(
            help.contains("Exit codes:") && help.contains("3  not reachable"),
            "{help}"
        );
    }
}

// ---------------------------------------------------------- the docs' commands

/// `blf-bridge …` command lines of a Markdown file: lines of fenced blocks that
/// start with `blf-bridge ` (continuations joined, `# comments` dropped) and
/// inline code spans that do.
fn doc_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let t = t.strip_prefix("$ ").unwrap_or(t);
            if !pending.is_empty() || t.starts_with("blf-bridge ") {
                let (t, more) = match t.strip_suffix('\\') {
                    Some(t) => (t, true),
                    None => (t, false),
                };
                pending.push_str(t);
                pending.push(' ');
                if !more {
                    let cmd = pending.split(" # ").next().unwrap().trim().to_string();
                    out.push(cmd);
                    pending.clear();
                }
            }
        } else {
            for (i, span) in line.split('`').enumerate() {
                if i % 2 == 1 && (span.starts_with("blf-bridge ") || span == "blf-bridge") {
                    out.push(span.to_string());
                }
            }
        }
    }
    out
}

/// Shell-like words (single and double quotes).
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in cmd.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[test]
fn every_command_shown_in_the_docs_exists() {
    use clap::Parser;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for doc in ["README.md", "profiles/README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let cmds = doc_commands(&text);
        assert!(!cmds.is_empty(), "{doc}: no blf-bridge commands found");
        for cmd in cmds {
            // placeholders get a sample value
            let args: Vec<String> = words(&cmd)
                .into_iter()
                .map(|w| match w.as_str() {
                    "<profile>" => "generic".to_string(),
                    "<state>" => "offline".to_string(),
                    "<file>" | "<FILE>" => "blf-bridge.toml".to_string(),
                    _ => w,
                })
                .collect();
            if args.len() == 1 {
                continue; // the bare name, in prose
            }
            if let Err(e) = blf_bridge::cli::Cli::try_parse_from(&args) {
                panic!("{doc}: `{cmd}` does not parse:\n{e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} commands checked");
}

#[test]
fn doc_command_extraction() {
    let md = "run `blf-bridge check --config f.toml` now\n```sh\nblf-bridge render --profile x \\\n  --state idle   # comment\ndocker run x\n```\n";
    assert_eq!(
        doc_commands(md),
        [
            "blf-bridge check --config f.toml",
            "blf-bridge render --profile x  --state idle"
        ]
    );
    assert_eq!(words("a 'b c' \"d\" ''"), ["a", "b c", "d", ""]);
}

#[test]
fn the_example_config_shows_the_real_default_allow_list() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("blf-bridge.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = blf_bridge::config::Config::parse(&text, "example", &|_| Some("x".into())).unwrap();
    assert_eq!(cfg.security.allow, blf_bridge::config::default_allow());
}
