//! The full pass behind `check`: every problem of a configuration file in one
//! run, each as `file:line: key: what is wrong and what to write instead`.
//!
//! [`Config::parse`](super::Config::parse) deserializes the whole file with
//! serde, which stops at the first error and often names no key. When that
//! fails, [`structure`] walks the spanned document instead: every TOML syntax
//! error, then every key checked on its own against the same `Raw*` structs
//! (so the schema is not written twice) with its section and line. The
//! [`semantics`] checks (mistakes serde cannot see) run on every parse.

use super::{
    ConfigError, RawAccount, RawConfig, RawHttp, RawListen, RawProfiles, RawProxy, RawSecurity,
    RawState, RawSubscriptions, RawUpstream, line_of,
};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Largest sensible `[subscriptions] first_notify_timeout_ms`: a phone waits
/// this long for its first NOTIFY; beyond a minute its SUBSCRIBE transaction
/// long timed out.
pub const MAX_FIRST_NOTIFY_TIMEOUT_MS: u64 = 60_000;

struct Sink<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ConfigError>,
    /// Offsets of the text's newlines, found at the first error: a file with
    /// many errors costs one pass, not one per error.
    newlines: Option<Vec<usize>>,
}

impl<'a> Sink<'a> {
    fn new(text: &'a str, file: &'a str) -> Sink<'a> {
        Sink {
            text,
            file,
            errors: Vec::new(),
            newlines: None,
        }
    }

    fn at(&mut self, offset: usize, message: String) {
        let text = self.text;
        let newlines = self
            .newlines
            .get_or_insert_with(|| memchr::memchr_iter(b'\n', text.as_bytes()).collect());
        let line = newlines.partition_point(|&n| n < offset.min(text.len())) + 1;
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            message,
        });
    }
}

/// Syntax and type errors, all of them, each naming its key. Empty when the
/// document parses and every key has the right type (serde's own error then
/// stands).
pub(super) fn structure(text: &str, file: &str) -> Vec<ConfigError> {
    let mut s = Sink::new(text, file);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let off = e.span().map(|r| r.start).unwrap_or(0);
            let msg = e.message().trim().replace('\n', "; ");
            s.at(
                off,
                format!("TOML syntax: {msg} (sections are [name], keys are name = value, strings in \"quotes\")"),
            );
        }
        return s.errors;
    }
    let doc = doc.into_inner();
    for (key, value) in doc.iter() {
        let name = key.get_ref().as_ref();
        let off = key.span().start;
        // the section itself: known, and of the right shape?
        let shape = value.get_ref();
        if let Err(m) = check_one::<RawConfig>(key, value) {
            if m.contains(&format!("unknown field `{name}`")) {
                s.at(
                    off,
                    format!("[{name}]: unknown section; {}", expected_part(&m)),
                );
                continue;
            }
            if name == "account" && !shape.is_array() {
                s.at(
                    off,
                    "account: accounts are a list; write [[account]] (double brackets), one block per account".into(),
                );
                continue;
            }
            if !shape.is_table() && !shape.is_array() {
                s.at(
                    off,
                    format!("{name}: is a section, not a value; write [{name}] and its keys on the lines below"),
                );
                continue;
            }
        }
        if let Some(section) = shape.as_table() {
            check_section(&mut s, name, section);
        } else if let Some(list) = shape.as_array() {
            for item in list.iter() {
                if let Some(t) = item.get_ref().as_table() {
                    check_section(&mut s, name, t);
                }
            }
        }
    }
    for required in ["listen", "upstream"] {
        if !doc.iter().any(|(k, _)| k.get_ref().as_ref() == required) {
            s.at(
                text.len(),
                format!("[{required}]: missing section (see blf-bridge.example.toml, or make a file with `blf-bridge init`)"),
            );
        }
    }
    s.errors
}

/// Check each key of one section on its own against the section's struct.
fn check_section(s: &mut Sink<'_>, name: &str, table: &DeTable<'_>) {
    let check: fn(&Spanned<toml::de::DeString<'_>>, &Spanned<DeValue<'_>>) -> Result<(), String> =
        match name {
            "listen" => check_one::<RawListen>,
            "upstream" => check_one::<RawUpstream>,
            "account" => check_one::<RawAccount>,
            "profiles" => check_one::<RawProfiles>,
            "subscriptions" => check_one::<RawSubscriptions>,
            "security" => check_one::<RawSecurity>,
            "proxy" => check_one::<RawProxy>,
            "state" => check_one::<RawState>,
            "http" => check_one::<RawHttp>,
            _ => return,
        };
    for (key, value) in table.iter() {
        let k = key.get_ref().as_ref();
        if let Err(m) = check(key, value) {
            if m.contains("unknown field") {
                s.at(
                    key.span().start,
                    format!("{name}.{k}: unknown key; {}", expected_part(&m)),
                );
            } else {
                s.at(
                    key.span().start,
                    format!("{name}.{k}: {m}{}", hint_for(&m, k)),
                );
            }
        }
    }
    let required: &[&str] = match name {
        "upstream" => &["proxy", "domain"],
        "account" => &["user"],
        _ => &[],
    };
    for r in required {
        if !table.iter().any(|(k, _)| k.get_ref().as_ref() == *r) {
            let example = match *r {
                "proxy" => "proxy = \"pbx.example.com:5060\"",
                "domain" => "domain = \"pbx.example.com\"",
                _ => "user = \"1001\"",
            };
            let off = table
                .iter()
                .next()
                .map(|(k, _)| k.span().start)
                .unwrap_or(0);
            s.at(off, format!("{name}.{r}: missing; write {example}"));
        }
    }
}

/// Deserialize `T` from a table holding only `key = value`; `Err` with serde's
/// message unless the only complaint is about other (missing) fields.
fn check_one<T: DeserializeOwned>(
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
) -> Result<(), String> {
    let mut one = DeTable::new();
    one.insert(key.clone(), value.clone());
    let span = key.span().start..value.span().end;
    let de = ValueDeserializer::from(Spanned::new(span, DeValue::Table(one)));
    match T::deserialize(de) {
        Ok(_) => Ok(()),
        Err(e) if e.message().contains("missing field") => Ok(()),
        Err(e) => Err(e.message().trim().to_string()),
    }
}

/// `expected one of ...` from serde's unknown-field message.
fn expected_part(m: &str) -> String {
    match m.split_once(", expected ") {
        Some((_, rest)) => format!("expected {rest} (check the spelling)"),
        None => "remove it (check the spelling)".to_string(),
    }
}

/// What to write instead, from serde's "expected ..." wording.
fn hint_for(m: &str, key: &str) -> String {
    let exp = m.rsplit("expected ").next().unwrap_or_default();
    if exp.starts_with("a string") || exp.starts_with("string") {
        format!(" (write it in quotes: {key} = \"...\")")
    } else if exp.starts_with('u') || exp.starts_with('i') {
        format!(" (write a whole number without quotes: {key} = 60)")
    } else if exp.starts_with("a boolean") {
        format!(" (write {key} = true or {key} = false, without quotes)")
    } else if exp.starts_with("a sequence") {
        format!(" (write a list: {key} = [\"...\", \"...\"])")
    } else {
        String::new()
    }
}

/// Mistakes that type-check: a URI or a doubled port in `proxy`, a port in
/// `advertise`, `allow = []`, a duplicate account, an absurd timeout. Ignores values of the wrong type (see [`structure`]).
pub(super) fn semantics(text: &str, file: &str) -> Vec<ConfigError> {
    let mut s = Sink::new(text, file);
    let Ok(doc) = DeTable::parse(text) else {
        return s.errors;
    };
    let doc = doc.into_inner();
    let get = |section: &str| {
        doc.iter()
            .find(|(k, _)| k.get_ref().as_ref() == section)
            .map(|(k, v)| (k.span().start, v))
    };
    // [upstream] proxy
    if let Some((_, up)) = get("upstream")
        && let Some(t) = up.get_ref().as_table()
        && let Some((off, v)) = key(t, "proxy")
        && let Some(p) = v.as_str()
        && let Some(m) = proxy_problem(p)
    {
        s.at(off, m);
    }

    // [listen] advertise
    if let Some((_, l)) = get("listen")
        && let Some(t) = l.get_ref().as_table()
        && let Some((off, v)) = key(t, "advertise")
        && let Some(a) = v.as_str()
        && let Some(host) = host_with_port(a)
    {
        s.at(
            off,
            format!(
                "listen.advertise: '{a}' has a port; advertise takes only the host (the port comes from [listen] udp/tcp), write advertise = \"{host}\""
            ),
        );
    }

    // [security] allow = []
    if let Some((_, sec)) = get("security")
        && let Some(t) = sec.get_ref().as_table()
        && let Some((off, v)) = key(t, "allow")
        && v.as_array().is_some_and(|a| a.is_empty())
    {
        s.at(
            off,
            "security.allow: an empty list refuses every phone (each gets 403); remove the key for the default (private ranges and loopback) or list your networks, e.g. allow = [\"192.168.1.0/24\"]".into(),
        );
    }

    // [subscriptions] first_notify_timeout_ms
    if let Some((_, sub)) = get("subscriptions")
        && let Some(t) = sub.get_ref().as_table()
        && let Some((off, v)) = key(t, "first_notify_timeout_ms")
        && let Some(n) = v.as_integer()
        && let Ok(n) = u64::from_str_radix(n.as_str(), n.radix())
        && n > MAX_FIRST_NOTIFY_TIMEOUT_MS
    {
        s.at(
            off,
            format!(
                "subscriptions.first_notify_timeout_ms: {n} ms would leave phones without a first NOTIFY far past their SUBSCRIBE timeout; write at most {MAX_FIRST_NOTIFY_TIMEOUT_MS} (the default, 2000, suits every PBX)"
            ),
        );
    }

    // [[account]]: users distinct
    if let Some((_, accounts)) = get("account")
        && let Some(list) = accounts.get_ref().as_array()
    {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in list.iter() {
            let Some(t) = item.get_ref().as_table() else {
                continue;
            };
            let Some((off, v)) = key(t, "user") else {
                continue;
            };
            let Some(u) = v.as_str() else { continue };
            let line = line_of(text, off);
            if let Some(first) = seen.get(u) {
                s.at(
                    off,
                    format!(
                        "account.user: '{u}' is already an account (line {first}); each [[account]] needs its own user, remove or rename one"
                    ),
                );
            } else {
                seen.insert(u.to_string(), line);
            }
        }
    }
    s.errors
}

/// A configuration file without `[[account]]` (checked by `Config::load`, so
/// `check`, `run` and a reload refuse it; text for tests may omit accounts).
pub(super) fn no_account(text: &str, file: &str) -> Option<ConfigError> {
    let (doc, _) = DeTable::parse_recoverable(text);
    if doc
        .get_ref()
        .iter()
        .any(|(k, _)| k.get_ref().as_ref() == "account")
    {
        return None;
    }
    Some(ConfigError {
        file: file.to_string(),
        line: line_of(text, text.trim_end().len()),
        message: "account: no [[account]]; the bridge subscribes upstream with these credentials (without one the PBX refuses every subscription and keys stay idle), add:\n  [[account]]\n  user = \"1001\"\n  password_env = \"BLF_PW_1001\"".into(),
    })
}

/// `name = value` of a table: the key's offset and the value.
fn key<'a, 'i>(t: &'a DeTable<'i>, name: &str) -> Option<(usize, &'a DeValue<'i>)> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == name)
        .map(|(k, v)| (k.span().start, v.get_ref()))
}

/// Why `proxy` is not `host[:port]`, with the value to write instead.
fn proxy_problem(p: &str) -> Option<String> {
    let lower = p.to_ascii_lowercase();
    let (scheme_less, had_scheme) = ["sips:", "sip:", "udp://", "tcp://"]
        .iter()
        .find(|s| lower.starts_with(*s))
        .map_or((p, false), |s| (&p[s.len()..], true));
    let scheme_less = scheme_less.trim_start_matches('/');
    let fixed = fix_host_port(scheme_less);
    if had_scheme {
        return Some(format!(
            "upstream.proxy: '{p}' is a URI; proxy takes host:port without \"sip:\", write proxy = \"{fixed}\""
        ));
    }
    if fixed != scheme_less {
        return Some(format!(
            "upstream.proxy: '{p}' is not host:port (more than one port?), write proxy = \"{fixed}\""
        ));
    }
    None
}

/// `host:port` from something like `host:5060:5060` or `host:5060;transport=udp`.
fn fix_host_port(s: &str) -> String {
    let s = s.split([';', '?', '/']).next().unwrap_or_default();
    if s.starts_with('[') || s.parse::<IpAddr>().is_ok() {
        return s.to_string();
    }
    let mut parts = s.split(':');
    let host = parts.next().unwrap_or_default();
    match parts.next() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The host of `host:port` (not of a bare IPv6 address).
fn host_with_port(a: &str) -> Option<String> {
    if a.parse::<IpAddr>().is_ok() {
        return None;
    }
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    let (h, p) = a.rsplit_once(':')?;
    (!h.contains(':') && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_and_advertise_shapes() {
        assert_eq!(proxy_problem("pbx.example.com:5060"), None);
        assert_eq!(proxy_problem("pbx.example.com"), None);
        assert_eq!(proxy_problem("[::1]:5060"), None);
        assert!(
            proxy_problem("sip:pbx.example.com:5060")
                .unwrap()
                .contains("write proxy = \"pbx.example.com:5060\"")
        );
        assert!(
            proxy_problem("pbx.example.com:5060:5060")
                .unwrap()
                .contains("write proxy = \"pbx.example.com:5060\"")
        );
        assert_eq!(host_with_port("192.168.1.10"), None);
        assert_eq!(host_with_port("fe80::1"), None);
        assert_eq!(
            host_with_port("192.168.1.10:5060").as_deref(),
            Some("192.168.1.10")
        );
        assert_eq!(
            host_with_port("bridge.lan:5060").as_deref(),
            Some("bridge.lan")
        );
    }
}
