//! The bridge to `ezk-sip-types`, for grammars that are intricate and off the hot
//! path (digest challenges). Subscription-State is read with the bridge's own
//! [`SubState`](super::SubState); ezk's types are re-exported for callers that
//! want its enums.

use crate::sip::grammar::{Res, TypedError};
use bytes::Bytes;

/// Subscription-State types of `ezk-sip-types`, for callers that want its enums;
/// the bridge itself reads the header with [`SubState`](super::SubState).
pub use ezk_sip_types::header::typed::{EventReasonValue, SubStateValue, SubscriptionState};

/// Parse one header value with an `ezk-sip-types` grammar. Folded line breaks are
/// turned into single spaces first (ezk expects an unfolded value). The whole value
/// must be consumed.
pub fn ezk_parse<T: ezk_sip_types::header::HeaderParse>(raw: &[u8]) -> Res<T> {
    let unfolded: Bytes = if raw.iter().any(|&c| c == b'\r' || c == b'\n') {
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let ch = raw[i];
            if ch == b'\r' || ch == b'\n' {
                while i < raw.len() && matches!(raw[i], b'\r' | b'\n' | b' ' | b'\t') {
                    i += 1;
                }
                v.push(b' ');
                continue;
            }
            v.push(ch);
            i += 1;
        }
        Bytes::from(v)
    } else {
        Bytes::copy_from_slice(raw)
    };
    let s = std::str::from_utf8(&unfolded).map_err(|_| TypedError("value is not UTF-8"))?;
    match T::parse(&unfolded, s) {
        Ok((rest, v)) if rest.trim().is_empty() => Ok(v),
        Ok(_) => Err(TypedError("trailing characters after value")),
        Err(_) => Err(TypedError("malformed value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_state_via_ezk() {
        let s: SubscriptionState =
            ezk_parse(b"terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.state, SubStateValue::Terminated);
        assert_eq!(s.reason, Some(EventReasonValue::Probation));
        assert_eq!(s.retry_after, Some(30));
        let s: SubscriptionState = ezk_parse(b"active;\r\n expires=3599").unwrap();
        assert_eq!(s.state, SubStateValue::Active);
        assert_eq!(s.expires, Some(3599));
    }
}
