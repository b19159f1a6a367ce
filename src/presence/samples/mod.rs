//! Tests against real upstream bodies (tests/data/presence/, see its README):
//! Kamailio captures from the upstream harness, FreeSWITCH / Asterisk / BroadWorks
//! bodies from the protocol notes, and a few constructed documents. Also the full
//! merge table and truncation/mutation robustness.
//!
//! This file holds the sample bodies and the helpers that read them; the tests are
//! in one file per concern: dialog-info samples, PIDF samples, streams, the merge
//! table, robustness.

mod dialog_info_samples;
mod merge_table;
mod pidf_samples;
mod robustness;
mod streams;

use super::*;
use crate::config::EmptyPresence;
use crate::util::Rng;

macro_rules! sample {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../../tests/data/presence/", $name)).as_slice(),
        )
    };
}

const DIALOG_SAMPLES: &[(&str, &[u8])] = &[
    sample!("kamailio-dialog-v1-dummy.xml"),
    sample!("kamailio-dialog-v2-early.xml"),
    sample!("kamailio-dialog-v3-confirmed.xml"),
    sample!("kamailio-dialog-v4-terminated.xml"),
    sample!("kamailio-dialog-v5-dummy.xml"),
    sample!("kamailio-dialog-dummy-template.xml"),
    sample!("opensips-dialog-idle.xml"),
    sample!("freeswitch-dialog-early.xml"),
    sample!("freeswitch-dialog-held.xml"),
    sample!("freeswitch-dialog-idle.xml"),
    sample!("asterisk-chansip-dialog-early.xml"),
    sample!("asterisk-pjsip-dialog-v0-terminated.xml"),
    sample!("asterisk-pjsip-dialog-v1-early.xml"),
    sample!("asterisk-pjsip-dialog-v2-confirmed.xml"),
    sample!("asterisk-pjsip-dialog-v3-hold.xml"),
    sample!("mikopbx-dialog-confirmed.xml"),
    sample!("broadworks-dialog-confirmed.xml"),
    sample!("constructed-dialog-early-initiator.xml"),
    sample!("constructed-dialog-ringing-and-busy.xml"),
    sample!("constructed-dialog-partial-v0-full.xml"),
    sample!("constructed-dialog-partial-v1-add-early.xml"),
    sample!("constructed-dialog-partial-v2-terminate.xml"),
    sample!("constructed-dialog-partial-v4-gap.xml"),
];

const PIDF_SAMPLES: &[(&str, &[u8])] = &[
    sample!("kamailio-presence-open.xml"),
    sample!("kamailio-presence-closed.xml"),
    sample!("kamailio-presence-dummy.xml"),
    sample!("freeswitch-pidf-unregistered.xml"),
    sample!("freeswitch-pidf-on-the-phone.xml"),
    sample!("asterisk-chansip-pidf-unavailable.xml"),
    sample!("asterisk-chansip-pidf-on-the-phone.xml"),
    sample!("asterisk-pjsip-pidf-on-the-phone.xml"),
];

fn body(name: &str) -> &'static [u8] {
    DIALOG_SAMPLES
        .iter()
        .chain(PIDF_SAMPLES)
        .chain([sample!("kamailio-presence-nobody.xml")].iter())
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

fn dialog(name: &str) -> DialogInfoDoc {
    parse_dialog_info(body(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn pidf(name: &str) -> PidfDoc {
    parse_pidf(body(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}
