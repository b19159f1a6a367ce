//! The lamp panel in a real browser: headless Chromium driven over WebDriver
//! (chromium-driver from Debian) loads `/` while the Kamailio end-to-end
//! scenario runs, and sees the lamp of 1002 go offline → idle → ringing →
//! busy → idle → offline through its `data-state`, live (server-sent events,
//! no reload). A screenshot of each state is saved under
//! `target/panel-screenshots/` (a test artifact: look at them).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with a JSON body; the response body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // read the head, then exactly Content-Length bytes (or chunks up to the last)
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the head".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match (length, chunked) {
            (Some(n), _) => body.len() >= n,
            (None, true) => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            (None, false) => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut tmp).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    if chunked {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n).ok_or("short chunk")?);
            rest = &after[n..];
            rest = rest.strip_prefix("\r\n").unwrap_or(rest);
        }
        return Ok(out);
    }
    Ok(body)
}

fn json_value(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        assert!(
            wait_until(secs(10), POLL, || http(addr, "GET", "/status", None)
                .is_ok()),
            "chromedriver answers"
        );
        let caps = r#"{"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"args":["--headless=new","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--window-size=1100,520"]}}}}"#;
        let v = json_value(&http(addr, "POST", "/session", Some(caps)).expect("new session"));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Driver {
            child,
            addr,
            session,
        }
    }

    fn cmd(&self, method: &str, what: &str, body: Option<&str>) -> serde_json::Value {
        let path = format!("/session/{}/{what}", self.session);
        json_value(&http(self.addr, method, &path, body).unwrap_or_default())
    }

    fn navigate(&self, url: &str) {
        self.cmd("POST", "url", Some(&format!("{{\"url\":\"{url}\"}}")));
    }

    fn lamp_state(&self, aor: &str) -> Option<String> {
        let script = format!(
            "{{\"script\":\"var e=document.querySelector('.lamp[data-aor=\\\"{aor}\\\"]'); return e ? e.dataset.state : null;\",\"args\":[]}}"
        );
        self.cmd("POST", "execute/sync", Some(&script))["value"]
            .as_str()
            .map(String::from)
    }

    fn screenshot(&self, file: &PathBuf) {
        let v = self.cmd("GET", "screenshot", None);
        if let Some(b64) = v["value"].as_str() {
            let _ = std::fs::write(file, base64_decode(b64));
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[test]
fn the_panel_follows_1002_live_in_a_browser() {
    if !e2e_ready("the_panel_follows_1002_live_in_a_browser") {
        return;
    }
    let have = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            !e2e_required(),
            "chromedriver missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: chromedriver not installed");
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default());
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config =
        bridge_config(free_port(), kam.addr()) + &format!("\n[http]\nlisten = \"{http_addr}\"\n");
    let bridge = Bridge::start(&config);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("panel-screenshots"))
        .unwrap_or_else(|| PathBuf::from("panel-screenshots"));
    let _ = std::fs::create_dir_all(&shots);

    let driver = Driver::start();
    driver.navigate(&format!("http://{http_addr}/"));

    // a Wave watches 1002 (never registered: offline)
    let mut wave =
        SippCmd::blf_watcher(bridge.addr(), BlfModel::Wave, "1001", "1002", secs(30)).spawn();
    let mut seen: Vec<String> = Vec::new();
    let mut expect = |want: &str, timeout: Duration| {
        let ok = wait_until(timeout, Duration::from_millis(100), || {
            if let Some(s) = driver.lamp_state("sip:1002@pbx.test") {
                if seen.last() != Some(&s) {
                    seen.push(s.clone());
                }
                return s == want;
            }
            false
        });
        assert!(ok, "the panel's lamp shows {want}; seen {seen:?}");
        driver.screenshot(&shots.join(format!("{:02}-{want}.png", seen.len())));
    };
    expect("offline", secs(10));
    let mut phone = SippCmd::phone(kam.addr(), "1002", secs(12))
        .set("ringing_ms", "3000")
        .spawn();
    expect("idle", secs(10));
    let mut call = SippCmd::caller(kam.addr(), "1003", "1002", secs(3)).spawn();
    expect("ringing", secs(10));
    expect("busy", secs(10));
    call.wait_success(secs(15));
    expect("idle", secs(10));
    phone.wait_success(secs(20));
    expect("offline", secs(10));
    eprintln!("screenshots in {}", shots.display());
    // before the upstream answered the new target is "unknown" (hollow)
    let states: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s == "unknown")
        .collect();
    assert_eq!(
        states,
        ["offline", "idle", "ringing", "busy", "idle", "offline"],
        "the lamp's states in order, live: {seen:?}"
    );
    wave.kill();
}
