//! TLS towards the upstream (`[upstream] transport = "tls"`): the rustls
//! client configuration (system roots from the OS store plus an optional
//! `ca_file`, an optional client certificate), the checks `blf-bridge check`
//! makes of those files, and one readable sentence for a refused certificate
//! (what the bridge expected, what the server presented).
//!
//! Uses nothing else of the crate: `config` calls [`check_files`], the runtime
//! [`client_config`].

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Certificates and key files larger than this are not certificates.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{} is {} bytes, too large for a PEM file",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            path.display()
        ),
        e => format!("{} is not a valid PEM private key: {e}", path.display()),
    })
}

/// A CA file: its certificates must be usable as trust anchors.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = load_certs(path)?;
    let mut store = RootCertStore::empty();
    for c in &certs {
        store.add(c.clone()).map_err(|e| {
            format!(
                "{}: a certificate is not usable as a CA: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// A client certificate chain and its key, checked to belong together.
pub fn load_client(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = load_certs(cert)?;
    let k = load_key(key)?;
    rustls::sign::CertifiedKey::from_der(certs.clone(), k.clone_key(), &provider()).map_err(
        |e| match e {
            Error::InconsistentKeys(_) => format!(
                "the key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            e => format!("{} / {}: {e}", cert.display(), key.display()),
        },
    )?;
    Ok((certs, k))
}

/// What `check` and the config loader say about the TLS files: `(key, message)`
/// for each problem (`ca_file`, `client_cert`, `client_key`).
pub fn check_files(
    ca_file: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some(Err(e)) = ca_file.map(load_ca) {
        problems.push(("ca_file", e));
    }
    match (client_cert, client_key) {
        (Some(c), Some(k)) => {
            if let Err(e) = load_client(c, k) {
                let key = if e.contains(&k.display().to_string()) && !e.contains("does not belong")
                {
                    "client_key"
                } else {
                    "client_cert"
                };
                problems.push((key, e));
            }
        }
        (Some(_), None) => problems.push((
            "client_cert",
            "needs client_key (the certificate's private key, PEM)".into(),
        )),
        (None, Some(_)) => problems.push((
            "client_key",
            "needs client_cert (the client certificate, PEM)".into(),
        )),
        (None, None) => {}
    }
    problems
}

/// The trust anchors: the OS store and `ca_file`. Returns the store and a
/// description for log lines ("N system roots + ca_file F").
pub fn roots(ca_file: Option<&Path>) -> Result<(RootCertStore, String), String> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(native.certs);
    let mut desc = format!("{added} system roots");
    if let Some(ca) = ca_file {
        let certs = load_ca(ca)?;
        let n = certs.len();
        for c in certs {
            store
                .add(c)
                .map_err(|e| format!("{}: not usable as a CA: {e}", ca.display()))?;
        }
        desc.push_str(&format!(" + {n} from ca_file {}", ca.display()));
    }
    if store.is_empty() {
        return Err(
            "no trusted CA: the system store is empty (install ca-certificates) and no [upstream] ca_file is set"
                .into(),
        );
    }
    Ok((store, desc))
}

/// The client configuration for the upstream: TLS 1.2 and 1.3, the roots of
/// [`roots`], the client certificate if given. Certificates are verified by
/// rustls/webpki; a refusal is explained by [`Explaining`].
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<(Arc<ClientConfig>, String), String> {
    let (roots, desc) = roots(ca_file)?;
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let verifier = Arc::new(Explaining {
        inner,
        trusted: desc.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match client {
        Some((cert, key)) => {
            let (certs, key) = load_client(cert, key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok((Arc::new(cfg), desc))
}

/// The name the upstream's certificate must carry (and the SNI sent): a DNS
/// name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let n = name.trim().trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(n.to_string())
        .map_err(|_| format!("'{name}' is neither a DNS name nor an IP address"))
}

/// A refused certificate, explained: what was expected and what was presented.
#[derive(Debug)]
struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// webpki's verifier, with a refusal turned into one sentence naming the
/// expected name or CAs and the presented certificate's subject and issuer.
/// The verification itself is webpki's, unchanged.
#[derive(Debug)]
struct Explaining {
    inner: Arc<WebPkiServerVerifier>,
    /// The trust anchors, described.
    trusted: String,
}

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(ce)) => {
                let msg = explain(&ce, end_entity, server_name, &self.trusted);
                Err(Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(Refusal(msg))),
                )))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{n:?}"),
    }
}

fn explain(
    ce: &CertificateError,
    cert: &CertificateDer<'_>,
    expected: &ServerName<'_>,
    trusted: &str,
) -> String {
    let (subject, issuer) = der::subject_issuer_cn(cert.as_ref());
    let presented = format!(
        "subject CN={}, issuer CN={}",
        subject.as_deref().unwrap_or("?"),
        issuer.as_deref().unwrap_or("?")
    );
    let expected_name = name_str(expected);
    match ce {
        CertificateError::NotValidForNameContext {
            presented: names, ..
        } => {
            // rustls writes them as `DnsName("x")` / `IpAddress(…)`
            let names: Vec<String> = names
                .iter()
                .map(|n| {
                    let inner = n
                        .split_once('(')
                        .and_then(|(_, r)| r.strip_suffix(')'))
                        .unwrap_or(n);
                    inner.trim_matches('"').to_string()
                })
                .collect();
            format!(
                "certificate name mismatch: expected \"{expected_name}\" ([upstream] tls_name, else the host of proxy), the server presented a certificate for \"{}\" ({presented})",
                names.join("\", \"")
            )
        }
        CertificateError::NotValidForName => format!(
            "certificate name mismatch: expected \"{expected_name}\" ([upstream] tls_name, else the host of proxy), the server presented {presented}"
        ),
        CertificateError::UnknownIssuer => format!(
            "certificate not signed by a trusted CA: expected a chain to one of {trusted}, the server presented {presented} for \"{expected_name}\""
        ),
        // the issuer's name matches a trusted CA, its key does not: another CA
        // of the same name (a CA that was replaced, a test CA made twice)
        CertificateError::BadSignature => format!(
            "certificate not signed by a trusted CA: its issuer has the name of a trusted CA but the signature does not verify with that CA's key (the CA was replaced, or ca_file holds another CA of the same name): expected a chain to one of {trusted}, the server presented {presented} for \"{expected_name}\""
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("certificate expired: the server presented {presented}")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("certificate not valid yet: the server presented {presented}")
        }
        other => format!("certificate refused ({other}): the server presented {presented}"),
    }
}

/// Just enough DER to name a certificate's subject and issuer common names
/// in a log line (nothing is decided on it; webpki did the verifying).
mod der {
    /// One TLV: (tag, content, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&l0, rest) = rest.split_first()?;
        let (len, rest) = if l0 < 0x80 {
            (usize::from(l0), rest)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &d| (a << 8) | usize::from(d));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// The common name (2.5.4.3) of an X.501 Name.
    fn cn(name: &[u8]) -> Option<String> {
        let mut sets = name;
        while let Some((_, set, rest)) = tlv(sets) {
            sets = rest;
            let mut atvs = set;
            while let Some((_, atv, rest)) = tlv(atvs) {
                atvs = rest;
                let (tag, oid, after) = tlv(atv)?;
                if tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                    let (_, value, _) = tlv(after)?;
                    return Some(
                        String::from_utf8_lossy(value)
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(128)
                            .collect(),
                    );
                }
            }
        }
        None
    }

    /// (subject CN, issuer CN) of a DER certificate.
    pub fn subject_issuer_cn(cert: &[u8]) -> (Option<String>, Option<String>) {
        let parse = || -> Option<(Option<String>, Option<String>)> {
            let (_, certificate, _) = tlv(cert)?;
            let (_, tbs, _) = tlv(certificate)?;
            let mut rest = tbs;
            let (tag, _, r) = tlv(rest)?;
            rest = if tag == 0xa0 { tlv(r)?.2 } else { r }; // version, then serial
            let (_, _, r) = tlv(rest)?; // signature algorithm
            let (_, issuer, r) = tlv(r)?;
            let (_, _, r) = tlv(r)?; // validity
            let (_, subject, _) = tlv(r)?;
            Some((cn(subject), cn(issuer)))
        };
        parse().unwrap_or((None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_survives_garbage() {
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
        ] {
            assert_eq!(der::subject_issuer_cn(junk), (None, None));
        }
    }

    #[test]
    fn a_ca_of_the_same_name_is_explained_as_untrusted() {
        let name = server_name("pbx.test").unwrap();
        let cert = CertificateDer::from(Vec::new());
        let line = explain(
            &CertificateError::BadSignature,
            &cert,
            &name,
            "1 from ca_file /etc/ca.pem",
        );
        assert!(
            line.starts_with("certificate not signed by a trusted CA: "),
            "{line}"
        );
        assert!(
            line.contains("the signature does not verify")
                && line.contains("1 from ca_file /etc/ca.pem")
                && line.contains("for \"pbx.test\""),
            "{line}"
        );
    }

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(matches!(
            server_name("pbx.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("192.0.2.7"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[2001:db8::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn missing_or_non_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("blf-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let p = check_files(Some(&dir.join("missing.pem")), Some(&junk), None);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "ca_file");
        assert!(p[0].1.contains("cannot read"), "{p:?}");
        assert_eq!(p[1].0, "client_cert");
        assert!(p[1].1.contains("needs client_key"), "{p:?}");
        let p = check_files(Some(&junk), None, None);
        assert!(p[0].1.contains("no PEM certificate"), "{p:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
