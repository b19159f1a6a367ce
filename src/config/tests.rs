//! Tests of the configuration loader.

use super::*;

const GOOD: &str = r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"

[upstream]
proxy = "pbx.example.com:5070"
domain = "pbx.example.com"
transport = "udp"

[[account]]
user = "1001"
password = "secret"

[[account]]
user = "1002"
password_env = "PW1002"

[profiles]
dir = "/etc/blf-bridge/profiles"
"#;

fn env(k: &str) -> Option<String> {
    (k == "PW1002").then(|| "from-env".to_string())
}

#[test]
fn state_dir_defaults_beside_the_file_resolves_relative_and_can_be_off() {
    let dir = std::env::temp_dir().join(format!("blf-cfg-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bridge.toml");
    // PW1002 is not set in the test environment: use a password in the text
    let base = GOOD.replace("password_env = \"PW1002\"", "password = \"x\"");
    std::fs::write(&f, &base).unwrap();
    assert_eq!(Config::load(&f).unwrap().state_dir, Some(dir.join("state")));
    std::fs::write(&f, format!("{base}\n[state]\ndir = \"var/st\"\n")).unwrap();
    assert_eq!(
        Config::load(&f).unwrap().state_dir,
        Some(dir.join("var/st"))
    );
    std::fs::write(&f, format!("{base}\n[state]\ndir = \"/abs/st\"\n")).unwrap();
    assert_eq!(
        Config::load(&f).unwrap().state_dir,
        Some(PathBuf::from("/abs/st"))
    );
    std::fs::write(&f, format!("{base}\n[state]\ndir = \"\"\n")).unwrap();
    assert_eq!(Config::load(&f).unwrap().state_dir, None);
    // parsed from text without a file: no store unless asked for
    assert_eq!(Config::parse(GOOD, "t.toml", &env).unwrap().state_dir, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn upstream_rate_defaults_to_20_and_zero_is_refused() {
    let c = Config::parse(GOOD, "t.toml", &env).unwrap();
    assert_eq!(c.subscriptions.upstream_rate, 20);
    let e = Config::parse(
        &format!("{GOOD}\n[subscriptions]\nupstream_rate = 0\n"),
        "t.toml",
        &env,
    )
    .unwrap_err();
    assert!(
        e.iter().any(|e| e.message.contains("upstream_rate")),
        "{e:?}"
    );
}

#[test]
fn account_realm_is_optional_and_not_empty() {
    let c = Config::parse(GOOD, "t.toml", &env).unwrap();
    assert_eq!(c.accounts[0].realm, None);
    let pinned = GOOD.replace(
        "password_env = \"PW1002\"",
        "password_env = \"PW1002\"\nrealm = \"asterisk\"",
    );
    let c = Config::parse(&pinned, "t.toml", &env).unwrap();
    assert_eq!(c.accounts[1].realm.as_deref(), Some("asterisk"));
    let empty = GOOD.replace(
        "password_env = \"PW1002\"",
        "password_env = \"PW1002\"\nrealm = \"\"",
    );
    let e = Config::parse(&empty, "t.toml", &env).unwrap_err();
    assert!(e[0].message.contains("realm"), "{e:?}");
}

#[test]
fn good_config_loads_with_defaults() {
    let c = Config::parse(GOOD, "t.toml", &env).unwrap();
    assert_eq!(c.listen.udp, Some("127.0.0.1:5060".parse().unwrap()));
    assert_eq!(c.upstream.proxy_host, "pbx.example.com");
    assert_eq!(c.upstream.proxy_port, 5070);
    assert_eq!(c.upstream.transport, Transport::Udp);
    assert_eq!(c.accounts[1].password, "from-env");
    assert_eq!(c.account_for(Some("1002")).unwrap().user, "1002");
    assert_eq!(c.account_for(Some("9999")).unwrap().user, "1001");
    assert_eq!(c.subscriptions, Subscriptions::default());
    assert_eq!(c.default_profile, "generic");
    assert!(c.security.allows("192.168.1.20".parse().unwrap()));
    assert!(!c.security.allows("8.8.8.8".parse().unwrap()));
    assert_eq!(c.security, Security::default());
    assert_eq!(c.upstream.empty_presence, EmptyPresence::Offline);
    assert!(!format!("{:?}", c.accounts[0]).contains("secret"));
}

#[test]
fn errors_name_the_line() {
    let bad = GOOD.replace("udp = \"127.0.0.1:5060\"", "udp = \"localhost\"");
    let e = Config::parse(&bad, "t.toml", &env).unwrap_err();
    assert_eq!(e[0].line, 3, "{e:?}");
    assert!(
        e[0].to_string().starts_with("t.toml:3: listen.udp"),
        "{}",
        e[0]
    );

    let bad = GOOD.replace("transport = \"udp\"", "transport = \"sctp\"");
    let e = Config::parse(&bad, "t.toml", &env).unwrap_err();
    assert_eq!(e[0].line, 9);

    let bad = GOOD.replace("password_env = \"PW1002\"", "password_env = \"NOPE\"");
    let e = Config::parse(&bad, "t.toml", &env).unwrap_err();
    assert_eq!(e[0].line, 15, "{e:?}");
    assert!(e[0].message.contains("NOPE"));

    let e = Config::parse("[listen]\nudp = 5\n", "t.toml", &env).unwrap_err();
    assert_eq!(e[0].line, 2, "{e:?}");

    let bad = format!("{GOOD}\n[bogus]\nx = 1\n");
    let e = Config::parse(&bad, "t.toml", &env).unwrap_err();
    assert!(e[0].message.contains("bogus"), "{e:?}");
    assert!(e[0].line > 20);
}

#[test]
fn every_error_of_a_file_names_its_own_line() {
    // several errors in one file: each on its line (the newlines are indexed
    // once per file, then looked up)
    let text = "[listen]\nudp = 5\ntcp = 6\n\n[upstream]\nproxy = 7\n";
    let e = Config::parse(text, "t.toml", &env).unwrap_err();
    let mut lines: Vec<usize> = e.iter().map(|e| e.line).collect();
    lines.sort_unstable();
    lines.dedup();
    assert!(
        lines.contains(&2) && lines.contains(&3) && lines.contains(&6),
        "{e:?}"
    );
    for err in &e {
        let key_line = text.lines().nth(err.line - 1).unwrap_or("");
        let key = err.message.split(':').next().unwrap_or("");
        let leaf = key.rsplit('.').next().unwrap_or("");
        if ["udp", "tcp", "proxy"].contains(&leaf) {
            assert!(
                key_line.starts_with(leaf),
                "{err} is not on its line: {key_line:?}"
            );
        }
    }
}

#[test]
fn default_allow_is_rfc1918_and_loopback_only() {
    let s = Security::default();
    for ip in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1"] {
        assert!(s.allows(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["100.64.0.1", "169.254.1.1", "fd00::1", "fe80::1", "8.8.8.8"] {
        assert!(!s.allows(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn security_policies_parse_and_bad_values_name_the_line() {
    let c = Config::parse(
        &format!("{GOOD}\n[security]\nwatchers = \"allowed\"\nmax_targets = 5\nrate_per_source = 7\nblock_s = 9\nmax_contacts_per_register = 3\n"),
        "t.toml",
        &env,
    )
    .unwrap();
    assert_eq!(c.security.watchers, Watchers::Allowed);
    assert_eq!(c.security.max_targets, 5);
    assert_eq!(c.security.rate_per_source, 7);
    assert_eq!(c.security.block_s, 9);
    assert_eq!(c.security.max_contacts_per_register, 3);
    assert_eq!(c.security.max_tcp_per_source, 32);
    let text = format!("{GOOD}\n[security]\nwatchers = \"anyone\"\n");
    let e = Config::parse(&text, "t.toml", &env).unwrap_err();
    let line = text
        .lines()
        .position(|l| l.starts_with("watchers"))
        .unwrap()
        + 1;
    assert_eq!(e[0].line, line, "{e:?}");
    assert!(e[0].message.contains("security.watchers"), "{e:?}");
    let text = format!("{GOOD}\n[security]\nrate_per_source = 0\n");
    let e = Config::parse(&text, "t.toml", &env).unwrap_err();
    assert!(e[0].message.contains("rate_per_source"), "{e:?}");
    let e = Config::parse(
        &format!("{GOOD}\n[security]\nmax_foo = 1\n"),
        "t.toml",
        &env,
    )
    .unwrap_err();
    assert!(e[0].message.contains("max_foo"), "{e:?}");
}

#[test]
fn cidr_matching() {
    let c = Cidr::parse("192.168.0.0/16").unwrap();
    assert!(c.contains("192.168.44.1".parse().unwrap()));
    assert!(!c.contains("192.169.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:192.168.1.1".parse().unwrap()));
    assert!(
        Cidr::parse("fc00::/7")
            .unwrap()
            .contains("fd12::1".parse().unwrap())
    );
    assert!(
        Cidr::parse("10.0.0.1")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap())
    );
    assert!(
        Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("nonsense").is_err());
}

#[test]
fn host_port_splitting() {
    assert_eq!(split_host_port("pbx:5070").unwrap(), ("pbx".into(), 5070));
    assert_eq!(split_host_port("pbx").unwrap(), ("pbx".into(), 5060));
    assert_eq!(split_host_port("[::1]:5070").unwrap(), ("::1".into(), 5070));
    assert!(split_host_port("pbx:x").is_err());
}

#[test]
fn a_bare_domain_proxy_uses_srv_and_dns_names_its_server() {
    let c = Config::parse(GOOD, "t.toml", &env).unwrap();
    assert!(!c.upstream.proxy_srv, "host:port: no SRV");
    assert!(c.upstream.transport_given);
    assert_eq!(c.upstream.dns, None, "the system's resolver");
    let domain = GOOD
        .replace(
            "proxy = \"pbx.example.com:5070\"",
            "proxy = \"pbx.example.com\"\ndns = \"127.0.0.1:5353\"",
        )
        .replace("transport = \"udp\"\n", "");
    let c = Config::parse(&domain, "t.toml", &env).unwrap();
    assert!(c.upstream.proxy_srv);
    assert!(!c.upstream.transport_given, "NAPTR may choose");
    assert_eq!(c.upstream.dns, Some("127.0.0.1:5353".parse().unwrap()));
    for literal in ["192.0.2.1", "[2001:db8::1]", "192.0.2.1:5060"] {
        let t = GOOD.replace("pbx.example.com:5070", literal);
        let c = Config::parse(&t, "t.toml", &env).unwrap();
        assert!(!c.upstream.proxy_srv, "{literal}: no SRV for an IP literal");
    }
    // a bare IP means port 53
    let t = GOOD.replace(
        "transport = \"udp\"",
        "transport = \"udp\"\ndns = \"192.0.2.53\"",
    );
    let c = Config::parse(&t, "t.toml", &env).unwrap();
    assert_eq!(c.upstream.dns, Some("192.0.2.53:53".parse().unwrap()));
    let bad = GOOD.replace(
        "transport = \"udp\"",
        "transport = \"udp\"\ndns = \"ns.example.com\"",
    );
    let e = Config::parse(&bad, "t.toml", &env).unwrap_err();
    assert!(
        e.iter().any(|e| e.line == 10
            && e.message
                .starts_with("upstream.dns: 'ns.example.com' is not an IP address")),
        "{e:?}"
    );
}

#[test]
fn tls_upstream_defaults_to_5061_and_the_proxy_host_as_name() {
    let tls = GOOD
        .replace("transport = \"udp\"", "transport = \"tls\"")
        .replace("pbx.example.com:5070", "sip.example.net");
    let c = Config::parse(&tls, "t.toml", &env).unwrap();
    assert_eq!(c.upstream.transport, Transport::Tls);
    assert_eq!(c.upstream.proxy_port, 5061, "RFC 3261 §19.1.2");
    let t = c.upstream.tls.expect("tls settings");
    assert_eq!(t.name, "sip.example.net");
    assert_eq!((t.ca_file, t.client_cert, t.client_key), (None, None, None));
    // an explicit port and name are kept
    let named = tls.replace(
        "sip.example.net\"",
        "sip.example.net:5071\"\ntls_name = \"pbx.example.com\"",
    );
    let c = Config::parse(&named, "t.toml", &env).unwrap();
    assert_eq!(c.upstream.proxy_port, 5071);
    assert_eq!(c.upstream.tls.unwrap().name, "pbx.example.com");
    // over udp there are no tls settings
    assert_eq!(
        Config::parse(GOOD, "t.toml", &env).unwrap().upstream.tls,
        None
    );
}

#[test]
fn tls_keys_are_checked_and_only_taken_with_tls() {
    let text = GOOD.replace(
        "transport = \"udp\"",
        "transport = \"udp\"\nca_file = \"/nonexistent/ca.pem\"",
    );
    let errs = Config::parse(&text, "t.toml", &env).unwrap_err();
    assert!(
        errs.iter().any(|e| e.line == 10
            && e.message == "upstream.ca_file is only used with transport = \"tls\""),
        "{errs:?}"
    );
    let text = text.replace("transport = \"udp\"", "transport = \"tls\"");
    let errs = Config::parse(&text, "t.toml", &env).unwrap_err();
    assert!(
        errs.iter().any(|e| e.line == 10
            && e.message
                .starts_with("upstream.ca_file: cannot read /nonexistent/ca.pem")),
        "{errs:?}"
    );
    let text = GOOD.replace(
        "transport = \"udp\"",
        "transport = \"tls\"\nclient_key = \"/nonexistent/k.pem\"\ntls_name = \"a b\"",
    );
    let errs = Config::parse(&text, "t.toml", &env).unwrap_err();
    let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert!(
        msgs.contains(&"upstream.client_key: needs client_cert (the client certificate, PEM)"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("upstream.tls_name: ")),
        "{msgs:?}"
    );
    let errs = Config::parse(
        &GOOD.replace("transport = \"udp\"", "transport = \"sctp\""),
        "t.toml",
        &env,
    )
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.message == "upstream.transport: 'sctp' is not udp, tcp or tls"),
        "{errs:?}"
    );
}
