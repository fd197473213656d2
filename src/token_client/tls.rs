//! Which certificate authorities a TLS connection trusts, and the rustls
//! configuration built on them (always with the crate's ring provider, never
//! the process-wide default).

use std::{
    ffi::OsString,
    fmt,
    path::Path,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::SystemTime,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    ClientConfig, RootCertStore,
};

use crate::ConfigError;

/// The certificate authorities the token client and
/// [`HttpsConnector`](crate::HttpsConnector) trust.
///
/// By default ([`Trust::from_env`], read once when the client is built):
/// the operating system's store (as `rustls-native-certs` loads it) plus the
/// webpki (Mozilla) roots bundled with the crate. As OpenSSL and curl do,
/// `SSL_CERT_FILE` (a PEM file) and `SSL_CERT_DIR` (directories of them),
/// when set, take the place of the operating system's store; the webpki
/// roots stay. Add a private CA (or a TLS-inspecting proxy's) with
/// [`with_pem_file`](Self::with_pem_file) or
/// [`PasswordGrant::with_ca_file`](crate::PasswordGrant::with_ca_file).
///
/// ```no_run
/// use wokelo_auth::Trust;
///
/// # fn main() -> Result<(), wokelo_auth::ConfigError> {
/// let trust = Trust::from_env()?.with_pem_file("/etc/company/ca.pem")?;
/// # let _ = trust; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    /// Where the roots came from, for `Debug`: (what, how many).
    from: Vec<(String, usize)>,
}

impl Trust {
    /// The operating system's store (or `SSL_CERT_FILE` / `SSL_CERT_DIR`)
    /// and the webpki roots, read now. Without those variables, the
    /// operating system's store is read once per process; a store that
    /// cannot be read leaves the webpki roots.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the variable if `SSL_CERT_FILE` or
    /// `SSL_CERT_DIR` is set but cannot be read or holds no certificate.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .into_iter()
            .filter_map(|name| Some((name, std::env::var_os(name)?)))
            .collect::<Vec<_>>();
        if vars.is_empty() {
            static SYSTEM: OnceLock<Trust> = OnceLock::new();
            return Ok(SYSTEM.get_or_init(Self::system).clone());
        }
        // Parsing a bundle costs milliseconds per client: the last one is
        // kept while the variables and their files' sizes and modification
        // times stay the same.
        static LAST: Mutex<Option<(Vec<Stamp>, Trust)>> = Mutex::new(None);
        let stamps = vars
            .iter()
            .map(|(_, value)| Stamp::of(value))
            .collect::<Vec<_>>();
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, trust)) = &*last {
            if *seen == stamps {
                return Ok(trust.clone());
            }
        }
        let shown = vars
            .iter()
            .map(|(name, value)| format!("{name}={}", value.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        let loaded = rustls_native_certs::load_native_certs();
        if let Some(e) = loaded.errors.first() {
            return Err(ConfigError::new(format!(
                "cannot load the CA certificates of {shown}: {e}; point it at a readable PEM file or unset it"
            )));
        }
        if loaded.certs.is_empty() {
            return Err(ConfigError::new(format!(
                "no CA certificate found in {shown}: it must hold PEM (-----BEGIN CERTIFICATE-----) certificates"
            )));
        }
        let trust = Self::webpki_roots().with_roots(shown.clone(), loaded.certs);
        // A bundle whose certificates all fail to parse would otherwise
        // leave only the webpki roots, silently.
        if trust.from.last().is_none_or(|(_, added)| *added == 0) {
            return Err(ConfigError::new(format!(
                "none of the certificates in {shown} is a usable CA certificate; point it at a valid PEM bundle or unset it"
            )));
        }
        *last = Some((stamps, trust.clone()));
        Ok(trust)
    }

    /// Only the webpki (Mozilla) roots bundled with the crate: the same on
    /// every machine, blind to the operating system's store.
    pub fn webpki_roots() -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let n = roots.len();
        Self {
            roots: Arc::new(roots),
            from: vec![("webpki roots".to_owned(), n)],
        }
    }

    /// The operating system's store and the webpki roots.
    fn system() -> Self {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::debug!(error = %e, "part of the operating system's certificate store could not be read");
        }
        Self::webpki_roots().with_roots("operating system".to_owned(), loaded.certs)
    }

    /// Also trusts the CA certificates of a PEM file (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks), e.g. a company's private CA or
    /// a TLS-inspecting proxy's.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file if it cannot be read, holds no
    /// certificate, or holds one that is not a usable CA certificate.
    pub fn with_pem_file(self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::new(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        self.with_pem_named(&bytes, &path.display().to_string())
    }

    /// Also trusts the CA certificates in `pem` (the contents of a PEM file).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `pem` holds no certificate or one that is not a
    /// usable CA certificate.
    pub fn with_pem(self, pem: &[u8]) -> Result<Self, ConfigError> {
        self.with_pem_named(pem, "the PEM data")
    }

    fn with_pem_named(self, pem: &[u8], name: &str) -> Result<Self, ConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(format!("{name} is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(format!(
                "no CA certificate in {name}: it must hold PEM (-----BEGIN CERTIFICATE-----) certificates"
            )));
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| {
                ConfigError::new(format!(
                    "certificate {} of {name} is not a usable CA certificate: {e}",
                    i + 1
                ))
            })?;
        }
        Ok(self.with_roots(name.to_owned(), certs))
    }

    /// Adds every parsable certificate of `certs`, noted as coming from `from`.
    fn with_roots(mut self, from: String, certs: Vec<CertificateDer<'static>>) -> Self {
        let roots = Arc::make_mut(&mut self.roots);
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        self.from.push((from, added));
        self
    }

    /// The rustls configuration for these roots, with the crate's ring
    /// provider: never the process-level default, which another crate in the
    /// tree may set (or leave ambiguous).
    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth()
    }
}

/// A path and what it pointed at when read: its size and modification time.
#[derive(PartialEq, Eq)]
struct Stamp {
    path: OsString,
    file: Option<(u64, Option<SystemTime>)>,
}

impl Stamp {
    fn of(path: &OsString) -> Self {
        let file = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        Self {
            path: path.clone(),
            file,
        }
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("roots", &self.roots.len())
            .field("from", &self.from)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_problem() {
        let e = Trust::webpki_roots()
            .with_pem(b"not a certificate")
            .unwrap_err();
        assert!(
            e.to_string().contains("no CA certificate in the PEM data"),
            "{e}"
        );
        let e = Trust::webpki_roots()
            .with_pem_file("/nonexistent/ca.pem")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read the CA file /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_file_adds_to_the_roots() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let base = Trust::webpki_roots();
        let n = base.roots.len();
        let trust = base.with_pem(ca.cert.pem().as_bytes()).unwrap();
        assert_eq!(trust.roots.len(), n + 1);
        assert!(format!("{trust:?}").contains("the PEM data"));
    }
}
