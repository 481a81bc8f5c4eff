//! rustls configuration: the listener side (several certificates picked by SNI, ALPN h2 and
//! http/1.1, TLS 1.2+) and the upstream side (webpki roots or a CA file, optional skip-verify).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read certificate {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data =
        std::fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("key {} is not valid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{} holds no PKCS#8, RSA or EC private key", path.display()))
}

/// Reads one DER TLV: (tag, content, rest). Enough DER for walking to a certificate's validity.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, r) = rest.split_at(n);
        rest = r;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an X.509 UTCTime (tag 0x17) or GeneralizedTime (0x18) in UTC into Unix seconds.
fn x509_time(tag: u8, content: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, rest) = match tag {
        0x17 => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 => (num(0..4)?, 4),
        _ => return None,
    };
    let at = |i: usize| num(rest + i..rest + i + 2);
    let days = days_from_civil(year, at(0)?, at(2)?);
    Some(days * 86_400 + at(4)? * 3600 + at(6)? * 60 + at(8)?)
}

/// A certificate's notAfter, in seconds since the Unix epoch.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der_tlv(cert)?;
    let (_, tbs, _) = der_tlv(cert)?;
    let (mut tag, _, mut rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        // [0] version, then the serial number.
        (tag, _, rest) = der_tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let (_, _, rest) = der_tlv(rest)?; // signature algorithm
    let (_, _, rest) = der_tlv(rest)?; // issuer
    let (_, validity, _) = der_tlv(rest)?;
    let (_, _, validity) = der_tlv(validity)?; // notBefore
    let (tag, after, _) = der_tlv(validity)?;
    x509_time(tag, after)
}

/// A warning when the leaf certificate in `path` has expired (levee still serves it: an expired
/// certificate is a warning, not an error, so a reload never takes a site down over it).
pub fn expiry_warning(path: &Path) -> Option<String> {
    let certs = read_certs(path).ok()?;
    let expires = not_after(certs.first()?)?;
    let now = i64::try_from(UnixTime::now().as_secs()).ok()?;
    (expires < now).then(|| {
        let days = (now - expires) / 86_400;
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires.max(0).unsigned_abs()),
        );
        format!(
            "certificate {} expired on {when} ({days} days ago); clients will refuse it",
            path.display()
        )
    })
}

/// Checks an upstream CA file the way the upstream client will load it.
pub fn check_ca(path: &Path) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("CA {} is not usable: {e}", path.display()))?;
    }
    Ok(())
}

/// One listener certificate and the names it answers for.
#[derive(Debug)]
struct SniEntry {
    /// `server_names` from the config; empty means "whatever the certificate itself covers".
    names: Vec<String>,
    leaf: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

impl SniEntry {
    fn serves(&self, sni: &str) -> bool {
        if !self.names.is_empty() {
            return self.names.iter().any(|n| match n.strip_prefix('*') {
                Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
                None => n == sni,
            });
        }
        let Ok(name) = ServerName::try_from(sni) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.leaf)
            .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
    }
}

/// Picks the certificate that serves the SNI name; the first one when none does.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<SniEntry>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.entries.first().map(|e| e.key.clone());
        let Some(sni) = hello.server_name() else {
            return first;
        };
        let sni = sni.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|e| e.serves(&sni))
            .map(|e| e.key.clone())
            .or(first)
    }
}

/// Builds the listener's rustls config, checking every key matches its certificate.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = provider();
    let mut entries = Vec::new();
    for c in &tls.certificates {
        let chain = read_certs(&c.cert)?;
        let key = read_key(&c.key)?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("key {} cannot be used: {e}", c.key.display()))?;
        let leaf = chain[0].clone();
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        ck.keys_match().map_err(|e| {
            format!(
                "key {} does not match certificate {}: {e}",
                c.key.display(),
                c.cert.display()
            )
        })?;
        entries.push(SniEntry {
            names: c
                .server_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            leaf,
            key: ck,
        });
    }
    if entries.is_empty() {
        return Err("tls needs at least one certificate".into());
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls client config for an upstream: webpki roots, or only the configured CA.
pub fn upstream_client_config(
    name: &str,
    tls: Option<&UpstreamTls>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    if tls.is_some_and(|t| t.insecure_skip_verify) {
        tracing::warn!(upstream = %name, "insecure_skip_verify: upstream TLS certificates are NOT verified");
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA {} is not usable: {e}", ca.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any certificate: only for `insecure_skip_verify = true`, which is logged as such.
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl fmt::Debug for NoVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerify")
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// The TLS settings of listeners and upstreams; `config` parses and validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}
