//! Small helpers shared by the sans-IO core: a seedable random source (so tests are
//! deterministic) and hex encoding.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A small, fast, seedable PRNG (SplitMix64). The runtime seeds it from the
/// process's random hasher keys; tests seed it with a constant. It is used for
/// branches, tags, Call-IDs, cnonces and timer jitter — values that must be unique
/// and unpredictable to a casual observer, not cryptographic secrets.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// Seed from the operating system's randomness (via std's `RandomState`).
    pub fn from_entropy() -> Rng {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        Rng { state: h.finish() }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// `len` characters from `[0-9a-zA-Z]`.
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut s = String::with_capacity(len);
        let mut bits = 0u64;
        let mut left = 0;
        for _ in 0..len {
            if left == 0 {
                bits = self.next_u64();
                left = 10;
            }
            s.push(ALPHABET[(bits % 62) as usize] as char);
            bits /= 62;
            left -= 1;
        }
        s
    }

    /// A new RFC 3261 branch: the magic cookie plus 16 random characters.
    pub fn branch(&mut self) -> String {
        let mut b = String::with_capacity(23);
        b.push_str("z9hG4bK");
        b.push_str(&self.token(16));
        b
    }

    /// A From/To tag.
    pub fn tag(&mut self) -> String {
        self.token(12)
    }
}

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_is_deterministic_and_tokens_are_alphanumeric() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let t = a.token(40);
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|c| c.is_ascii_alphanumeric()));
        let br = a.branch();
        assert!(br.starts_with("z9hG4bK") && br.len() == 23);
        assert_ne!(a.branch(), a.branch());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::seeded(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}

/// Serde for `std::time::Instant` as Unix milliseconds, so that plain-data state
/// holding deadlines can be stored and restored across a restart (a deadline in
/// the past simply fires at once after restore).
pub mod instant_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    fn to_unix_ms(t: Instant) -> u64 {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let wall = if t >= now_i {
            now_s + (t - now_i)
        } else {
            now_s.checked_sub(now_i - t).unwrap_or(UNIX_EPOCH)
        };
        wall.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn from_unix_ms(ms: u64) -> Instant {
        let now_i = Instant::now();
        let target = UNIX_EPOCH + Duration::from_millis(ms);
        match target.duration_since(SystemTime::now()) {
            Ok(ahead) => now_i + ahead,
            Err(e) => now_i.checked_sub(e.duration()).unwrap_or(now_i),
        }
    }

    pub fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        to_unix_ms(*t).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        Ok(from_unix_ms(u64::deserialize(d)?))
    }

    /// The same for `Option<Instant>`.
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
            t.map(to_unix_ms).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(from_unix_ms))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_is_within_a_few_ms() {
            let t = Instant::now() + Duration::from_secs(90);
            let back = from_unix_ms(to_unix_ms(t));
            let diff = if back > t { back - t } else { t - back };
            assert!(diff < Duration::from_millis(50), "{diff:?}");
        }
    }
}
