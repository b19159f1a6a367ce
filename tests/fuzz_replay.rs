//! The fuzz targets' code (`fuzz/exercise.rs`) run over the project's own test
//! data, as `cargo test` can afford it: the typed headers of every sample
//! message, every dialog-info and PIDF document, the shipped profiles, the
//! example configuration, and endpoint sequences with restarts. Keeps the shared
//! fuzz code compiling and linted with the crate, and its properties true on
//! real inputs; the fuzzers (`scripts/fuzz.sh`) explore the rest.

#[path = "../fuzz/exercise.rs"]
mod exercise;

use std::path::Path;

fn files(dir: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let mut m = files("tests/data/rfc4475", "dat");
    m.extend(files("tests/data/samples", "sip"));
    m.extend(files("tests/data/ipv6", "sip"));
    m
}

#[test]
fn typed_headers_of_every_sample_message() {
    let mut n = 0;
    for (_, data) in messages() {
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let value = match line.iter().position(|&b| b == b':') {
                Some(i) => &line[i + 1..],
                None => line,
            };
            exercise::headers(value);
            exercise::headers(line);
            n += 1;
        }
    }
    // and the corners a parser gets wrong
    for v in [
        &b""[..],
        b"SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport",
        b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3",
        b"\"\\\"\" <sip:[::1]:5060;lr>;tag=x",
        b"sip:[2001:db8::10:5070]",
        b"sip:user@[2001:db8::10]:5070;maddr=[::1]?h=v",
        b"4294967296 INVITE",
        b"dialog;id=\"",
        b"terminated;reason=timeout;retry-after=99999999999",
    ] {
        exercise::headers(v);
    }
    assert!(n > 500, "only {n} header lines");
}

#[test]
fn every_presence_document() {
    let docs = files("tests/data/presence", "xml");
    assert!(docs.len() > 20);
    for (name, d) in &docs {
        exercise::dialog_info(d);
        exercise::pidf(d);
        // truncated at a few places too
        for cut in [1, d.len() / 3, d.len() / 2, d.len().saturating_sub(1)] {
            let cut = cut.min(d.len());
            exercise::dialog_info(&d[..cut]);
            exercise::pidf(&d[..cut]);
        }
        let _ = name;
    }
}

#[test]
fn shipped_profiles_and_the_example_config() {
    for (_, d) in files("profiles", "toml") {
        exercise::profile(&d);
        exercise::profile(&d[..d.len() / 2]);
    }
    let ex = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("blf-bridge.example.toml"))
        .unwrap();
    exercise::config(&ex);
    exercise::config(exercise::ENDPOINT_CONFIG.as_bytes());
    exercise::config(b"[listen]\nudp = \"[::1]:5060\"\n[upstream]\nproxy = \"[::1]:5070\"\ndomain = \"pbx.test\"\n");
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/samples")
            .join(name),
    )
    .unwrap()
}

fn chunk(op: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![op];
    v.extend_from_slice(body);
    v.extend_from_slice(b"\0\0");
    v
}

#[test]
fn endpoint_sequences_with_restarts() {
    let sub = sample("subscribe_expires3600.sip");
    let notify = sample("notify.sip");
    let unsub = sample("subscribe_expires0.sip");
    let mut seq = Vec::new();
    seq.extend(chunk(0, &sub)); // phone A subscribes
    seq.extend(chunk(3, &[0])); // 0.3 s
    seq.extend(chunk(1, &notify)); // the upstream notifies
    seq.extend(chunk(4, b"")); // restart
    seq.extend(chunk(7, &[10])); // 10.7 s
    seq.extend(chunk(1, &notify));
    seq.extend(chunk(2, &sub)); // the same over TCP
    seq.extend(chunk(6, b"")); // the connection closes
    seq.extend(chunk(4, b"")); // restart again
    seq.extend(chunk(5, &sub)); // phone C
    seq.extend(chunk(7, &[200]));
    seq.extend(chunk(0, &unsub));
    seq.extend(chunk(3, &[255]));
    let sent = exercise::endpoint_sequence(&seq);
    assert!(sent > 0, "the bridge said nothing");
    // every message of the test data, from every side, with a restart between
    for (_, m) in messages() {
        let mut s = Vec::new();
        for op in [0, 1, 2, 4, 5, 6] {
            s.extend(chunk(op, &m));
        }
        exercise::endpoint_sequence(&s);
    }
}
