//! Truncated and mutated samples, size and depth limits, DOCTYPE entities.

use super::*;

fn root_end(b: &[u8]) -> usize {
    b.iter().rposition(|&c| c == b'>').map_or(0, |p| p + 1)
}

#[test]
fn every_truncation_of_every_sample_is_handled() {
    for (name, b) in DIALOG_SAMPLES.iter().chain(PIDF_SAMPLES) {
        let end = root_end(b);
        let is_dialog = DIALOG_SAMPLES.iter().any(|(n, _)| n == name);
        for i in 0..=b.len() {
            let cut = &b[..i];
            let d = parse_dialog_info(cut);
            let p = parse_pidf(cut);
            let mine = if is_dialog { d.is_ok() } else { p.is_ok() };
            assert_eq!(mine, i >= end, "{name} cut at {i}");
            let mut ds = DialogStream::new();
            let _ = ds.apply_body(cut);
            let mut ps = PresenceStream::new();
            let _ = ps.apply_body(cut, EmptyPresence::Unknown);
            let _ = merge(&ds, &ps);
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = Rng::seeded(0x05ee_db1f);
    let noise = b"<>/'\"&;=: \t\r\n\0\xff\xc3abc";
    for (_, b) in DIALOG_SAMPLES.iter().chain(PIDF_SAMPLES) {
        for _ in 0..300 {
            let mut m = b.to_vec();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(m.len() as u64 + 1) as usize;
                let byte = noise[rng.below(noise.len() as u64) as usize];
                match rng.below(3) {
                    0 if pos < m.len() => m[pos] = byte,
                    1 if pos < m.len() => {
                        m.remove(pos);
                    }
                    _ => m.insert(pos, byte),
                }
            }
            let mut ds = DialogStream::new();
            let _ = ds.apply_body(&m);
            let mut ps = PresenceStream::new();
            let _ = ps.apply_body(&m, EmptyPresence::Offline);
            let _ = merge(&ds, &ps);
        }
    }
}

#[test]
fn size_and_depth_limits() {
    let base = body("kamailio-dialog-v2-early.xml");
    // Padded to exactly the limit: accepted.
    let mut at_limit = base.to_vec();
    at_limit.resize(MAX_BODY, b' ');
    assert_eq!(parse_dialog_info(&at_limit).map(|d| d.dialogs.len()), Ok(1));
    at_limit.push(b' ');
    assert_eq!(
        parse_dialog_info(&at_limit),
        Err(PresenceError::TooLarge(MAX_BODY + 1))
    );
    let mut ps = PresenceStream::new();
    assert_eq!(
        ps.apply_body(&at_limit, EmptyPresence::Offline),
        Err(PresenceError::TooLarge(MAX_BODY + 1))
    );

    let deep = format!(
        "<dialog-info><dialog id='a'><state>early</state><local>{}{}</local></dialog></dialog-info>",
        "<x>".repeat(MAX_DEPTH),
        "</x>".repeat(MAX_DEPTH)
    );
    assert_eq!(
        parse_dialog_info(deep.as_bytes()),
        Err(PresenceError::TooDeep)
    );
    let deep = format!(
        "<presence>{}{}</presence>",
        "<a:b>".repeat(MAX_DEPTH),
        "</a:b>".repeat(MAX_DEPTH)
    );
    assert_eq!(parse_pidf(deep.as_bytes()), Err(PresenceError::TooDeep));
}

#[test]
fn doctype_entities_are_not_expanded() {
    let doc =
        b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>\
        <dialog-info entity='&b;'><dialog id='x'><state>early</state>\
        <remote><identity display='&b;'>sip:&b;@h</identity></remote></dialog></dialog-info>";
    let d = parse_dialog_info(doc).unwrap();
    assert_eq!(d.entity.as_deref(), Some("&b;"));
    assert_eq!(d.dialogs[0].remote.identity.as_deref(), Some("sip:&b;@h"));
}
