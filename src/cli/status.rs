//! `blf-bridge status`: ask the running bridge (`/api/targets`) and print its
//! targets, their states and the phones watching them as a table.

use super::http_get::{self, Target};
use super::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, GlobalOpts};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

/// Arguments of `blf-bridge status`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Exit codes:
  0  printed the table
  1  the bridge answered with an HTTP error (401: give --user/--password-env) or garbage
  2  bad configuration or command line (account passwords are NOT needed)
  3  not reachable: nothing answers at the address (bridge not running, wrong address)")]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the raw JSON of /api/targets instead of the table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

impl StatusArgs {
    pub fn execute(&self, _global: &GlobalOpts) -> i32 {
        let resolved = match self.target.resolve() {
            Ok(r) => r,
            Err(code) => return code,
        };
        let Some(url) = resolved.url else {
            eprintln!(
                "the configuration turns the HTTP listener off ([http] listen = \"\"); status needs it (or give --url)"
            );
            return EXIT_CONFIG;
        };
        let timeout = Duration::from_millis(self.timeout_ms);
        match http_get::get(&url, "/api/targets", resolved.auth.as_ref(), timeout) {
            Ok((200, body)) => {
                if self.json {
                    println!("{}", body.trim());
                    return EXIT_OK;
                }
                match serde_json::from_str::<Value>(&body) {
                    Ok(v) => {
                        print!("{}", table(&v));
                        EXIT_OK
                    }
                    Err(e) => {
                        eprintln!("{url}/api/targets: not the bridge's JSON: {e}");
                        EXIT_FAILURE
                    }
                }
            }
            other => http_get::report_failure(&url, "/api/targets", other),
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `active`, or `backoff (408 Request Timeout)`.
fn sub(v: &Value) -> String {
    let state = s(&v["state"]);
    match v["last_error"].as_str() {
        Some(e) => format!("{state} ({e})"),
        None => state,
    }
}

/// The table: one line per target, then one indented line per phone.
pub fn table(v: &Value) -> String {
    let mut out = String::new();
    let targets = v["targets"].as_array().cloned().unwrap_or_default();
    let reach = match (
        v["upstream_reachable"].as_bool(),
        v["upstream_heard_ms_ago"].as_u64(),
    ) {
        (Some(true), Some(ms)) => format!("reachable (heard {} s ago)", ms / 1000),
        (Some(true), None) => "not heard from yet".into(),
        _ => "NOT reachable".into(),
    };
    let server = match (
        v["upstream_server"].as_str(),
        v["upstream_servers"].as_u64(),
    ) {
        (Some(s), Some(n)) if n > 1 && !s.is_empty() => format!(" at {s} (1 of {n} servers)"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "upstream: {reach}{server}; {} targets, {} phone subscriptions",
        targets.len(),
        v["phone_subscriptions"].as_u64().unwrap_or(0)
    );
    if targets.is_empty() {
        let _ = writeln!(out, "(no phone watches anything yet)");
        return out;
    }
    let rows: Vec<[String; 5]> = targets
        .iter()
        .map(|t| {
            let dialogs = t["dialogs"]
                .as_array()
                .map(|d| d.iter().map(s).collect::<Vec<_>>().join(","))
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "-".into());
            [
                s(&t["aor"]),
                s(&t["state"]),
                format!("{} [{}]", sub(&t["dialog"]), dialogs),
                format!("{} [{}]", sub(&t["presence"]), s(&t["presence_status"])),
                t["watchers"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    let head = [
        "TARGET",
        "STATE",
        "DIALOG SUB [STATES]",
        "PRESENCE SUB [STATUS]",
        "PHONES",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
        .trim_end()
        .to_string()
    };
    let _ = writeln!(out, "{}", line(head));
    for (t, r) in targets.iter().zip(&rows) {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        for p in t["watchers"].as_array().cloned().unwrap_or_default() {
            let _ = writeln!(
                out,
                "    phone {}  profile {}  ua {}  expires in {} s",
                s(&p["address"]),
                s(&p["profile"]),
                s(&p["user_agent"]),
                s(&p["expires_in_s"])
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_targets_states_and_phones() {
        let v: Value = serde_json::from_str(
            r#"{"targets":[{"aor":"sip:1002@pbx.test","state":"busy",
            "dialog":{"state":"active","last_error":null},"dialogs":["confirmed"],
            "presence":{"state":"backoff","last_error":"408 Request Timeout"},
            "presence_status":"online",
            "watchers":[{"address":"udp:192.168.1.50:5062","profile":"grandstream-gxp",
            "user_agent":"Grandstream GXP2170","expires_in_s":3500}]}],
            "phone_subscriptions":1,"upstream_reachable":true,"upstream_heard_ms_ago":4200}"#,
        )
        .unwrap();
        let t = table(&v);
        assert!(
            t.starts_with(
                "upstream: reachable (heard 4 s ago); 1 targets, 1 phone subscriptions\n"
            ),
            "{t}"
        );
        assert!(t.contains("TARGET"), "{t}");
        assert!(
            t.contains("sip:1002@pbx.test  busy   active [confirmed]"),
            "{t}"
        );
        assert!(t.contains("backoff (408 Request Timeout) [online]"), "{t}");
        assert!(
            t.contains("phone udp:192.168.1.50:5062  profile grandstream-gxp  ua Grandstream GXP2170  expires in 3500 s"),
            "{t}"
        );
    }
}
