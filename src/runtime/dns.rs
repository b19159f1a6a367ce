//! Resolving `[upstream] proxy` the RFC 3263 way, with `hickory-resolver`:
//!
//! - an IP literal (with or without port) is used as it is, never re-resolved;
//! - `host:port`: A/AAAA of `host`, on that port;
//! - a bare domain (`proxy = "pbx.example.com"`): NAPTR (only when `transport`
//!   is not written in the file: the records choose UDP or TCP among the
//!   transports the bridge listens on) → SRV (`_sip._udp` / `_sip._tcp`;
//!   `_sips._tcp` with `transport = "tls"`) → A/AAAA of each target; no SRV
//!   record at all: A/AAAA of the domain on 5060 (5061 for TLS; RFC 3263 §4.2).
//!
//! SRV targets are ordered by priority, and within one priority by the
//! weighted random choice of RFC 2782; each target's addresses follow in turn
//! (only those the listener can reach). The result is the ordered list of
//! servers the core's failover walks (`endpoint::failover`), with the smallest
//! TTL of the records used: the runtime resolves again when it runs out.

use crate::config::Upstream;
use crate::flow::Flow;
use crate::sip::Transport;
use crate::util::Rng;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Shortest and longest time a resolution is used before the next one (a TTL
/// of 0 would make the bridge query without pause; a day-long one would miss
/// a provider's change for too long).
pub const MIN_TTL: Duration = Duration::from_secs(5);
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// One SRV record (or the single implied target of a name without SRV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub target: String,
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub ttl: u32,
}

/// One resolved target: its SRV data, transport and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub srv: SrvRecord,
    pub transport: Transport,
    /// Addresses the listener can reach, in the resolver's order.
    pub addrs: Vec<SocketAddr>,
    /// TTL of the address records (seconds).
    pub addr_ttl: u32,
}

/// What `[upstream] proxy` resolved to.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// How it was looked up (`"IP literal"`, `"A/AAAA"`, `"SRV _sip._udp.x"`,
    /// `"NAPTR x → SRV …"`).
    pub how: String,
    pub targets: Vec<Target>,
    /// Resolve again after this long (`None`: an IP literal, never).
    pub ttl: Option<Duration>,
}

impl Resolution {
    /// The servers in order of preference, as flows for the core.
    pub fn servers(&self) -> Vec<Flow> {
        let mut v: Vec<Flow> = Vec::new();
        for t in &self.targets {
            for a in &t.addrs {
                let f = Flow {
                    transport: t.transport,
                    remote: *a,
                    conn: None,
                };
                if !v.contains(&f) {
                    v.push(f);
                }
            }
        }
        v
    }
}

impl Resolution {
    /// The host names of the targets (not IP literals): they name the
    /// upstream too.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for t in &self.targets {
            let n = &t.srv.target;
            if n.parse::<IpAddr>().is_err() && !n.is_empty() && !v.contains(n) {
                v.push(n.clone());
            }
        }
        v
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ttl {
            Some(ttl) => writeln!(f, "{} (resolved again in {} s)", self.how, ttl.as_secs())?,
            None => writeln!(f, "{}", self.how)?,
        }
        let srv = self.how.contains("SRV ") && !self.how.ends_with("A/AAAA");
        for (i, t) in self.targets.iter().enumerate() {
            let addrs: Vec<String> = t.addrs.iter().map(|a| a.to_string()).collect();
            let addrs = if addrs.is_empty() {
                "no reachable address".to_string()
            } else {
                addrs.join(", ")
            };
            let ttl = match self.ttl {
                None => String::new(),
                Some(_) => format!(" (TTL {} s)", t.srv.ttl.min(t.addr_ttl)),
            };
            let (n, name, port, tr) = (i + 1, &t.srv.target, t.srv.port, t.transport.via_name());
            if srv {
                let (prio, weight) = (t.srv.priority, t.srv.weight);
                writeln!(
                    f,
                    "  {n}. {name} priority {prio} weight {weight} port {port} {tr}{ttl} -> {addrs}"
                )?;
            } else {
                writeln!(f, "  {n}. {name} port {port} {tr}{ttl} -> {addrs}")?;
            }
        }
        Ok(())
    }
}

/// RFC 2782 order: ascending priority; within one priority, repeatedly a
/// weighted random pick among those left (weight-0 records placed first, so
/// they are chosen only when the sum of the rest allows).
pub fn srv_order(mut records: Vec<SrvRecord>, rng: &mut Rng) -> Vec<SrvRecord> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let prio = records[0].priority;
        let n = records.iter().take_while(|r| r.priority == prio).count();
        let mut group: Vec<SrvRecord> = records.drain(..n).collect();
        while !group.is_empty() {
            let sum: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.below(sum + 1);
            let mut running = 0u64;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u64::from(r.weight);
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            out.push(group.remove(chosen));
        }
    }
    out
}

/// Can the listener bound to `listener` send to `addr`? (A v4 socket only to
/// v4; a specific v6 address only to v6; `[::]` to both.)
fn reachable(addr: &SocketAddr, listener: Option<SocketAddr>) -> bool {
    match listener {
        None => true,
        Some(SocketAddr::V4(_)) => addr.is_ipv4(),
        Some(SocketAddr::V6(l)) => l.ip().is_unspecified() || addr.is_ipv6(),
    }
}

/// The resolver for `[upstream] proxy` (see the module docs).
pub struct UpstreamResolver {
    up: Upstream,
    resolver: TokioResolver,
    /// Listeners by transport (a transport without one is not used).
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    rng: Rng,
    limit: Duration,
}

impl UpstreamResolver {
    /// `dns` (`[upstream] dns`) or the system's resolver configuration.
    /// `limit`: the longest one resolution may take.
    pub fn new(
        up: &Upstream,
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        limit: Duration,
    ) -> Result<UpstreamResolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match up.dns {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let ns = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = (limit / 3).max(Duration::from_secs(1));
        opts.attempts = 2;
        // the bridge keeps the resolution itself and asks again at its TTL
        opts.cache_size = 64;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
        Ok(UpstreamResolver {
            up: up.clone(),
            resolver,
            udp,
            tcp,
            rng: Rng::from_entropy(),
            limit,
        })
    }

    fn listener(&self, t: Transport) -> Option<SocketAddr> {
        match t {
            Transport::Udp => self.udp,
            // TLS connections are opened from the TCP listener's address
            Transport::Tcp | Transport::Tls => self.tcp.or(self.udp),
        }
    }

    /// Resolve once (bounded by the limit given to [`UpstreamResolver::new`]).
    pub async fn resolve(&mut self) -> Result<Resolution, String> {
        let proxy = self.up.proxy.clone();
        match tokio::time::timeout(self.limit, self.resolve_inner()).await {
            Ok(Ok(r)) if r.servers().is_empty() => Err(format!(
                "{proxy}: no address the bridge can reach ({})",
                r.how
            )),
            Ok(r) => r.map_err(|e| format!("{proxy}: {e}")),
            Err(_) => Err(format!(
                "{proxy}: no answer from DNS within {} s",
                self.limit.as_secs()
            )),
        }
    }

    async fn resolve_inner(&mut self) -> Result<Resolution, String> {
        let host = self.up.proxy_host.clone();
        let transport = self.up.transport;
        if let Ok(ip) = host.parse::<IpAddr>() {
            let addr = super::net::normalize(SocketAddr::new(ip, self.up.proxy_port));
            return Ok(Resolution {
                how: "IP literal".into(),
                targets: vec![Target {
                    srv: SrvRecord {
                        target: host,
                        priority: 0,
                        weight: 0,
                        port: addr.port(),
                        ttl: u32::MAX,
                    },
                    transport,
                    addrs: vec![addr],
                    addr_ttl: u32::MAX,
                }],
                ttl: None,
            });
        }
        if !self.up.proxy_srv {
            let t = self
                .host_target(&host, self.up.proxy_port, transport)
                .await?;
            return Ok(self.finish("A/AAAA".into(), vec![t]));
        }
        // NAPTR, when the transport is left to the provider
        let mut srv_names: Vec<(String, Transport)> = Vec::new();
        let mut how = String::new();
        if !self.up.transport_given {
            match self.resolver.lookup(host.as_str(), RecordType::NAPTR).await {
                Ok(l) => {
                    let mut recs: Vec<(u16, u16, String, Transport)> = Vec::new();
                    for r in l.answers() {
                        if let RData::NAPTR(n) = &r.data {
                            if !n.flags.eq_ignore_ascii_case(b"s") {
                                continue;
                            }
                            let t = if n.services.eq_ignore_ascii_case(b"SIP+D2U") {
                                Transport::Udp
                            } else if n.services.eq_ignore_ascii_case(b"SIP+D2T") {
                                Transport::Tcp
                            } else {
                                continue; // SIPS/TLS, SCTP: not spoken here
                            };
                            if self.listener(t).is_none() {
                                continue;
                            }
                            let name = n.replacement.to_string();
                            recs.push((n.order, n.preference, name, t));
                        }
                    }
                    recs.sort_by_key(|r| (r.0, r.1));
                    for (_, _, name, t) in recs {
                        srv_names.push((name.trim_end_matches('.').to_string(), t));
                    }
                    if !srv_names.is_empty() {
                        how = format!("NAPTR {host} -> ");
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => return Err(format!("NAPTR {host}: {e}")),
            }
        }
        if srv_names.is_empty() {
            let prefix = match transport {
                Transport::Udp => "_sip._udp",
                Transport::Tcp => "_sip._tcp",
                Transport::Tls => "_sips._tcp",
            };
            srv_names.push((format!("{prefix}.{host}"), transport));
        }
        let mut targets = Vec::new();
        let mut looked = Vec::new();
        for (name, t) in &srv_names {
            looked.push(name.clone());
            let records = match self.resolver.srv_lookup(name.as_str()).await {
                Ok(l) => {
                    let mut v = Vec::new();
                    for r in l.answers() {
                        if let RData::SRV(s) = &r.data {
                            v.push(SrvRecord {
                                target: s.target.to_string().trim_end_matches('.').to_string(),
                                priority: s.priority,
                                weight: s.weight,
                                port: s.port,
                                ttl: r.ttl,
                            });
                        }
                    }
                    v
                }
                Err(e) if e.is_no_records_found() => Vec::new(),
                Err(e) => return Err(format!("SRV {name}: {e}")),
            };
            // RFC 2782: a single target "." means "decidedly not available"
            if records.len() == 1 && records[0].target.is_empty() {
                return Err(format!(
                    "SRV {name}: the service is not available (target \".\")"
                ));
            }
            for srv in srv_order(records, &mut self.rng) {
                let mut tgt = self.host_target(&srv.target, srv.port, *t).await?;
                tgt.srv = SrvRecord {
                    target: srv.target.clone(),
                    ..srv
                };
                targets.push(tgt);
            }
        }
        if targets.is_empty() {
            // RFC 3263 §4.2: no SRV records: the domain's own addresses, on
            // the transport's default port (5060, 5061 for TLS)
            let port = if transport == Transport::Tls {
                5061
            } else {
                5060
            };
            let t = self.host_target(&host, port, transport).await?;
            return Ok(self.finish(
                format!("{how}SRV {} (no records) -> A/AAAA", looked.join(", ")),
                vec![t],
            ));
        }
        Ok(self.finish(format!("{how}SRV {}", looked.join(", ")), targets))
    }

    /// A/AAAA of `name` on `port`, only addresses the listener can reach.
    async fn host_target(
        &self,
        name: &str,
        port: u16,
        transport: Transport,
    ) -> Result<Target, String> {
        let lookup = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|e| format!("A/AAAA {name}: {e}"))?;
        let now = Instant::now();
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(now)
            .as_secs();
        let listener = self.listener(transport);
        let mut addrs: Vec<SocketAddr> = lookup
            .iter()
            .map(|ip| super::net::normalize(SocketAddr::new(ip, port)))
            .filter(|a| reachable(a, listener))
            .collect();
        // the listener's family first
        if let Some(l) = listener {
            addrs.sort_by_key(|a| a.is_ipv4() != l.is_ipv4());
        }
        Ok(Target {
            srv: SrvRecord {
                target: name.to_string(),
                priority: 0,
                weight: 0,
                port,
                ttl: u32::try_from(ttl).unwrap_or(u32::MAX),
            },
            transport,
            addrs,
            addr_ttl: u32::try_from(ttl).unwrap_or(u32::MAX),
        })
    }

    fn finish(&self, how: String, targets: Vec<Target>) -> Resolution {
        let ttl = targets
            .iter()
            .map(|t| t.srv.ttl.min(t.addr_ttl))
            .min()
            .unwrap_or(0);
        let ttl = Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL);
        Resolution {
            how,
            targets,
            ttl: Some(ttl),
        }
    }
}

/// Backoff between failed resolutions: 1, 2, 4 … 60 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(target: &str, priority: u16, weight: u16) -> SrvRecord {
        SrvRecord {
            target: target.into(),
            priority,
            weight,
            port: 5060,
            ttl: 60,
        }
    }

    #[test]
    fn priorities_first_then_weights() {
        let mut rng = Rng::seeded(7);
        let mut first_b = 0;
        for _ in 0..1000 {
            let o = srv_order(
                vec![
                    rec("c", 20, 0),
                    rec("a", 10, 10),
                    rec("b", 10, 30),
                    rec("d", 5, 0),
                ],
                &mut rng,
            );
            let names: Vec<&str> = o.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(names[0], "d");
            assert_eq!(names[3], "c");
            assert!(names[1..3].contains(&"a") && names[1..3].contains(&"b"));
            if names[1] == "b" {
                first_b += 1;
            }
        }
        // weight 30 of 40: about three quarters of the picks (± a margin)
        assert!((650..850).contains(&first_b), "{first_b}");
    }

    #[test]
    fn zero_weights_are_still_ordered_and_all_kept() {
        let mut rng = Rng::seeded(1);
        let o = srv_order(vec![rec("x", 1, 0), rec("y", 1, 0)], &mut rng);
        assert_eq!(o.len(), 2);
        assert!(srv_order(vec![], &mut rng).is_empty());
    }

    #[test]
    fn listener_family_decides_what_is_reachable() {
        let v4: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert!(reachable(&v4, Some("0.0.0.0:5060".parse().unwrap())));
        assert!(!reachable(&v6, Some("0.0.0.0:5060".parse().unwrap())));
        assert!(reachable(&v4, Some("[::]:5060".parse().unwrap())));
        assert!(!reachable(&v4, Some("[::1]:5060".parse().unwrap())));
        assert!(reachable(&v6, None));
    }

    #[tokio::test]
    async fn literals_are_used_as_they_are_and_never_resolved_again() {
        for (proxy, want) in [
            ("127.0.0.1:5070", "127.0.0.1:5070"),
            ("[::1]:5070", "[::1]:5070"),
            ("192.0.2.7", "192.0.2.7:5060"),
        ] {
            // a DNS server that is never asked (discard port)
            let text = format!(
                "[listen]\nudp = \"[::]:5060\"\n[upstream]\nproxy = \"{proxy}\"\ndomain = \"pbx.test\"\n\
                 dns = \"127.0.0.1:9\"\n[[account]]\nuser = \"1\"\npassword = \"x\"\n"
            );
            let cfg = crate::config::Config::parse(&text, "t.toml", &|_| None).unwrap();
            let mut r =
                UpstreamResolver::new(&cfg.upstream, cfg.listen.udp, None, Duration::from_secs(2))
                    .unwrap();
            let res = r.resolve().await.unwrap();
            assert_eq!(res.how, "IP literal");
            assert_eq!(res.ttl, None, "never resolved again");
            let want: SocketAddr = want.parse().unwrap();
            assert_eq!(res.servers(), vec![Flow::udp(want)]);
        }
    }

    #[test]
    fn backoff_grows_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(10), Duration::from_secs(60));
    }
}
