//! `Subscription-State` (RFC 6665 §4.1.3, §8.4), hand-written because it is on
//! the hot path of every NOTIFY.

use crate::sip::grammar::{
    Cursor, Params, Res, TypedError, is_token_char, parse_u32, strict_params,
};

/// The `substate-value` of a Subscription-State header (RFC 6665 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubStateKind {
    Active,
    Pending,
    Terminated,
    /// An `extension-substate` token; RFC 6665 §8.4 says to treat an unknown
    /// state like `active` unless the package says otherwise, so callers decide.
    Other,
}

/// `Subscription-State: state *(;param)` (RFC 6665 §4.1.3, §8.4), read without
/// allocation straight from the message bytes. This is on the hot path of every
/// NOTIFY, which is why it is hand-written rather than going through
/// `ezk-sip-types` (several times slower, and it copies the value first; see
/// docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubState<'a> {
    pub state: SubStateKind,
    /// `expires=` (delta-seconds), if present.
    pub expires: Option<u32>,
    /// `reason=` as written (`deactivated`, `probation`, `rejected`, `timeout`,
    /// `giveup`, `noresource`, `invariant` or an extension token).
    pub reason: Option<&'a [u8]>,
    /// `retry-after=` (delta-seconds), if present.
    pub retry_after: Option<u32>,
    /// Every parameter as written (including the three above).
    pub params: Params<'a>,
}

impl<'a> SubState<'a> {
    /// Parse a Subscription-State value. Linear whitespace (including folded line
    /// breaks) is accepted wherever RFC 3261 allows LWS; anything else that does not
    /// match the grammar is an error: a missing or non-token state, an empty or
    /// malformed parameter, `expires`/`retry-after` that are not 32-bit
    /// delta-seconds, a `reason` that is not a token, trailing garbage.
    pub fn parse(v: &'a [u8]) -> Res<SubState<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let state = c
            .token()
            .ok_or(TypedError("Subscription-State: missing or malformed state"))?;
        let state = if state.eq_ignore_ascii_case(b"active") {
            SubStateKind::Active
        } else if state.eq_ignore_ascii_case(b"pending") {
            SubStateKind::Pending
        } else if state.eq_ignore_ascii_case(b"terminated") {
            SubStateKind::Terminated
        } else {
            SubStateKind::Other
        };
        let params = strict_params(&mut c, false)?;
        let mut out = SubState {
            state,
            expires: None,
            reason: None,
            retry_after: None,
            params,
        };
        for (name, value) in params.iter() {
            if name.eq_ignore_ascii_case(b"expires") {
                let v = value.ok_or(TypedError("Subscription-State: expires without a value"))?;
                let n = parse_u32(v)
                    .map_err(|_| TypedError("Subscription-State: malformed expires"))?;
                out.expires.get_or_insert(n);
            } else if name.eq_ignore_ascii_case(b"retry-after") {
                let v = value.ok_or(TypedError(
                    "Subscription-State: retry-after without a value",
                ))?;
                let n = parse_u32(v)
                    .map_err(|_| TypedError("Subscription-State: malformed retry-after"))?;
                out.retry_after.get_or_insert(n);
            } else if name.eq_ignore_ascii_case(b"reason") {
                let v = value.ok_or(TypedError("Subscription-State: reason without a value"))?;
                if !v.iter().all(|&ch| is_token_char(ch)) {
                    return Err(TypedError("Subscription-State: reason is not a token"));
                }
                out.reason.get_or_insert(v);
            }
        }
        Ok(out)
    }

    /// Is `reason` this value (case-insensitive)?
    pub fn reason_is(&self, reason: &str) -> bool {
        self.reason
            .is_some_and(|r| r.eq_ignore_ascii_case(reason.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::ezk::{SubStateValue, SubscriptionState, ezk_parse};

    #[test]
    fn sub_state_states_and_params() {
        let s = SubState::parse(b"active;expires=3599").unwrap();
        assert_eq!(s.state, SubStateKind::Active);
        assert_eq!(s.expires, Some(3599));
        assert_eq!((s.reason, s.retry_after), (None, None));
        let s = SubState::parse(b"Terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.state, SubStateKind::Terminated);
        assert_eq!(s.reason, Some(&b"probation"[..]));
        assert!(s.reason_is("PROBATION"));
        assert_eq!(s.retry_after, Some(30));
        assert_eq!(s.expires, None);
        let s = SubState::parse(b"pending").unwrap();
        assert_eq!(s.state, SubStateKind::Pending);
        assert!(s.params.raw.is_empty());
        // extension state and unknown parameters are kept
        let s = SubState::parse(b"waiting;x-vendor=1;flag").unwrap();
        assert_eq!(s.state, SubStateKind::Other);
        assert_eq!(s.params.value("x-vendor"), Some(&b"1"[..]));
        assert!(s.params.has("flag"));
        // the first of a repeated parameter wins
        assert_eq!(
            SubState::parse(b"active;expires=5;expires=6")
                .unwrap()
                .expires,
            Some(5)
        );
    }

    #[test]
    fn sub_state_accepts_lws_and_folding() {
        let s = SubState::parse(b"  active ;\r\n expires = 3599 ; reason\t=\ttimeout  ").unwrap();
        assert_eq!(s.state, SubStateKind::Active);
        assert_eq!(s.expires, Some(3599));
        assert_eq!(s.reason, Some(&b"timeout"[..]));
    }

    #[test]
    fn sub_state_rejects_malformed() {
        for bad in [
            &b""[..],
            b"   ",
            b";expires=3",
            b"active;",
            b"active;;expires=3",
            b"active;expires",
            b"active;expires=",
            b"active;expires=-1",
            b"active;expires=4294967296",
            b"active;expires=\"30\"",
            b"active;retry-after=soon",
            b"terminated;reason=\"timeout\"",
            b"active expires=3",
            b"active,pending",
            b"\"active\"",
        ] {
            assert!(
                SubState::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sub_state_agrees_with_ezk_on_valid_values() {
        for v in [
            &b"active;expires=3599"[..],
            b"pending;expires=60",
            b"terminated;reason=noresource",
            b"terminated;reason=timeout;retry-after=120",
            b"active;\r\n expires=1",
        ] {
            let ours = SubState::parse(v).unwrap();
            let theirs: SubscriptionState = ezk_parse(v).unwrap();
            let kind = match theirs.state {
                SubStateValue::Active => SubStateKind::Active,
                SubStateValue::Pending => SubStateKind::Pending,
                SubStateValue::Terminated => SubStateKind::Terminated,
            };
            assert_eq!(ours.state, kind, "{v:?}");
            assert_eq!(ours.expires, theirs.expires, "{v:?}");
            assert_eq!(ours.retry_after, theirs.retry_after, "{v:?}");
            assert_eq!(ours.reason.is_some(), theirs.reason.is_some(), "{v:?}");
        }
    }
}
