//! Small helpers shared by the sans-IO core: the random source (a CSPRNG, seedable
//! so tests are deterministic) and hex encoding.

use rand::rngs::{StdRng, SysRng};
use rand::{Rng as _, SeedableRng, TryRng};

/// The core's random source: ChaCha12 (`rand`'s `StdRng`), a cryptographically
/// secure generator. The runtime seeds it from the operating system
/// ([`Rng::from_entropy`]); tests seed it with a constant ([`Rng::seeded`]).
/// Branches, tags, Call-IDs, cnonces and keys come from it: values an observer on
/// the LAN sees must not let them predict the next ones (with SplitMix64, one
/// To-tag gave away every past and future value and the flow-token key).
#[derive(Debug)]
pub struct Rng {
    inner: StdRng,
}

/// Fill `buf` from the operating system's CSPRNG (`getrandom`).
pub fn os_random(buf: &mut [u8]) -> Result<(), rand::rngs::SysError> {
    SysRng.try_fill_bytes(buf)
}

impl Rng {
    /// Deterministic: for tests and fuzzing only.
    pub fn seeded(seed: u64) -> Rng {
        Rng {
            inner: StdRng::seed_from_u64(seed),
        }
    }

    /// Seeded with 32 bytes from the operating system.
    pub fn from_entropy() -> Rng {
        Rng {
            inner: StdRng::try_from_rng(&mut SysRng).expect("no randomness from the OS"),
        }
    }

    /// An independent generator seeded with 32 bytes of this one.
    pub fn fork(&mut self) -> Rng {
        Rng {
            inner: StdRng::from_rng(&mut self.inner),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        self.inner.fill_bytes(buf)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// `len` characters from `[0-9a-zA-Z]` (5.95 bits each).
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
    fn entropy_seeded_generators_differ_and_forks_are_independent() {
        let mut a = Rng::from_entropy();
        let mut b = Rng::from_entropy();
        assert_ne!(a.next_u64(), b.next_u64());
        let mut f = a.fork();
        assert_ne!(f.token(16), a.token(16));
        let mut k = [0u8; 32];
        os_random(&mut k).unwrap();
        assert_ne!(k, [0u8; 32]);
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}

/// At most one log line per source and interval: what a flood from one source
/// cannot turn into a flood of the log. The map is pruned of quiet sources when
/// it grows.
#[derive(Debug, Default)]
pub struct LogGate {
    last: std::collections::HashMap<std::net::IpAddr, std::time::Instant>,
}

impl LogGate {
    /// How often one source may be logged about.
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

    /// Whether a line about `ip` may be logged now (then it is counted as logged).
    pub fn allow(&mut self, ip: std::net::IpAddr, now: std::time::Instant) -> bool {
        if self.last.len() >= 4096 {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < Self::INTERVAL);
        }
        match self.last.get(&ip) {
            Some(t) if now.saturating_duration_since(*t) < Self::INTERVAL => false,
            _ => {
                self.last.insert(ip, now);
                true
            }
        }
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
