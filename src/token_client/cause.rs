//! Why a token request did not reach the token endpoint, in one short phrase
//! for the error's `Display`: the source chain of a hyper-util error says
//! "client error (Connect)" at the top and the useful part at the bottom.

use std::{error::Error as StdError, io};

use super::connector::ViaProxy;
use crate::{source::scrub::one_line, BoxError, TokenError, TokenErrorKind};

/// The longest cause phrase, in characters.
const MAX_CAUSE_CHARS: usize = 200;

/// The error for a token request that got no response from `url`: its kind
/// and a message ending in the cause. A TLS certificate the client does not
/// trust, or a proxy refusing its credentials, is a
/// [`TokenErrorKind::Configuration`] error (retrying cannot fix it); the
/// rest are [`TokenErrorKind::Unavailable`].
pub(crate) fn unreachable(url: &str, error: BoxError) -> TokenError {
    if let Some(e) = error.downcast_ref::<TokenError>() {
        return e.clone();
    }
    let (kind, cause) = describe(&*error);
    TokenError::new(
        kind,
        format!(
            "could not reach the token endpoint {url}: {}",
            one_line(&cause, MAX_CAUSE_CHARS)
        ),
    )
    .with_boxed_source(error)
}

/// What went wrong, read from the whole source chain.
#[derive(Default)]
struct Found {
    proxy: Option<String>,
    tls: Option<(TokenErrorKind, String)>,
    tunnel: Option<(TokenErrorKind, &'static str)>,
    dns: bool,
    io: Option<String>,
    innermost: String,
}

fn describe(error: &(dyn StdError + 'static)) -> (TokenErrorKind, String) {
    let mut found = Found::default();
    let mut next = Some(error);
    while let Some(e) = next {
        found.note(e);
        next = below(e);
    }
    found.phrase()
}

/// The next error down: an `io::Error` wrapping another error hides it from
/// `source()` (which skips to the wrapped error's own source).
fn below<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
        return Some(inner);
    }
    e.source()
}

impl Found {
    fn note(&mut self, e: &(dyn StdError + 'static)) {
        self.innermost = e.to_string();
        if let Some(via) = e.downcast_ref::<ViaProxy>() {
            self.proxy = Some(via.proxy.clone());
        }
        #[cfg(feature = "rustls")]
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            self.tls = Some(tls_phrase(tls));
        }
        // hyper-util's connector errors are not nameable types: their
        // messages are the stable part ("dns error"; "tunnel error: ...").
        match self.innermost.as_str() {
            "dns error" => self.dns = true,
            "tunnel error: proxy authorization required" => {
                self.tunnel = Some((
                    TokenErrorKind::Configuration,
                    "the proxy requires credentials or refused them (407 Proxy Authentication Required): put them in the proxy URL, http://user:password@host:port",
                ))
            }
            "tunnel error: unsuccessful" => {
                self.tunnel = Some((
                    TokenErrorKind::Unavailable,
                    "the proxy refused the CONNECT tunnel",
                ))
            }
            "tunnel error: unexpected end of file" => {
                self.tunnel = Some((
                    TokenErrorKind::Unavailable,
                    "the proxy closed the connection during CONNECT",
                ))
            }
            _ => {}
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(phrase) = io_phrase(io) {
                self.io = Some(phrase.to_owned());
            }
        }
    }

    fn phrase(self) -> (TokenErrorKind, String) {
        let via = |s: String| match &self.proxy {
            Some(proxy) => format!("{s} (proxy {proxy})"),
            None => s,
        };
        if let Some((kind, tls)) = &self.tls {
            return (*kind, via(tls.clone()));
        }
        if let Some((kind, tunnel)) = self.tunnel {
            return (kind, via(tunnel.to_owned()));
        }
        let what = match (self.dns, &self.io) {
            (true, _) => format!("DNS lookup failed ({})", self.innermost),
            (false, Some(io)) => io.clone(),
            (false, None) => self.innermost.clone(),
        };
        (TokenErrorKind::Unavailable, via(what))
    }
}

fn io_phrase(e: &io::Error) -> Option<&'static str> {
    Some(match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::TimedOut => "connection timed out",
        io::ErrorKind::UnexpectedEof => "the connection closed before an answer",
        io::ErrorKind::AddrNotAvailable => "address not available",
        _ => return None,
    })
}

/// A TLS failure: an untrusted certificate is a setup problem, named with
/// what to do; the rest may be transient.
#[cfg(feature = "rustls")]
fn tls_phrase(e: &rustls::Error) -> (TokenErrorKind, String) {
    use rustls::CertificateError as C;
    const ADD_CA: &str = "add the CA certificate with PasswordGrant::with_ca_file or SSL_CERT_FILE (a private CA, or a TLS-inspecting proxy's)";
    let rustls::Error::InvalidCertificate(cert) = e else {
        return (
            TokenErrorKind::Unavailable,
            format!("TLS handshake failed: {e}"),
        );
    };
    let what = match cert {
        C::UnknownIssuer => format!("the server's TLS certificate has an unknown issuer: {ADD_CA}"),
        C::Expired | C::ExpiredContext { .. } => format!(
            "the server's TLS certificate has expired ({e}): the server must renew it; check the system clock"
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("the server's TLS certificate is not valid yet ({e}): check the system clock")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the server's TLS certificate is for another host name ({e}): check the base URL's host"
        ),
        _ => format!("the server's TLS certificate was refused ({e}); if a private CA issued it, {ADD_CA}"),
    };
    (TokenErrorKind::Configuration, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_io_error_is_found_below_its_wrapper() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let wrapped: BoxError = Box::new(io::Error::other(refused));
        let e = unreachable("https://x.test/auth/token/", wrapped);
        assert_eq!(e.kind(), TokenErrorKind::Unavailable);
        assert_eq!(
            e.to_string(),
            "could not reach the token endpoint https://x.test/auth/token/: connection refused"
        );
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn an_unknown_issuer_is_a_configuration_error_naming_the_fix() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = unreachable(
            "https://x.test/auth/token/",
            Box::new(io::Error::other(io::Error::new(
                io::ErrorKind::InvalidData,
                tls,
            ))),
        );
        assert_eq!(e.kind(), TokenErrorKind::Configuration);
        assert!(e.to_string().contains("unknown issuer"), "{e}");
        assert!(e.to_string().contains("SSL_CERT_FILE"), "{e}");
    }

    #[test]
    fn a_token_error_passes_through() {
        let original = TokenError::new(TokenErrorKind::Configuration, "bad CA file");
        let e = unreachable("https://x.test/", Box::new(original.clone()));
        assert_eq!(e.message(), "bad CA file");
    }
}
