use std::fmt;

use secrecy::SecretString;

use crate::{error::ConfigError, ApiBase};

/// The four values of Wokelo's password grant, and the API base URL.
///
/// The client secret and the password are [`SecretString`]s: `Debug` shows
/// the client id and username only.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) username: String,
    pub(crate) password: SecretString,
    pub(crate) base: ApiBase,
    /// Plain `http` to a host that is not loopback was opted into.
    pub(crate) allow_http: bool,
}

impl Credentials {
    /// Names of the environment variables [`Credentials::from_env`] reads.
    pub const ENV_VARS: [&'static str; 4] = [
        "WOKELO_CLIENT_ID",
        "WOKELO_CLIENT_SECRET",
        "WOKELO_USERNAME",
        "WOKELO_PASSWORD",
    ];

    /// Credentials for the default base URL, `https://api.wokelo.ai`.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            username: username.into(),
            password: SecretString::from(password.into()),
            base: ApiBase::default(),
            allow_http: false,
        }
    }

    /// Reads `WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME`,
    /// `WOKELO_PASSWORD` and, optionally, `WOKELO_BASE_URL` and
    /// `WOKELO_ALLOW_HTTP` (`1`, `true`, `yes` or `on`: see
    /// [`allow_http`](Self::allow_http)).
    ///
    /// # Errors
    ///
    /// Names every required variable that is unset, empty or not UTF-8, or
    /// says why `WOKELO_BASE_URL` is not a valid base URL, or refuses a plain
    /// `http` base URL for a host that is not loopback unless
    /// `WOKELO_ALLOW_HTTP` opts in.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let base = match get("WOKELO_BASE_URL").filter(|v| !v.trim().is_empty()) {
            Some(url) => ApiBase::parse(&url)?,
            None => ApiBase::default(),
        };
        let mut missing = Vec::new();
        let mut values = Self::ENV_VARS.map(|name| {
            let v = get(name).filter(|v| !v.trim().is_empty());
            if v.is_none() {
                missing.push(name);
            }
            v.unwrap_or_default()
        });
        if !missing.is_empty() {
            return Err(ConfigError::missing_env(missing));
        }
        let allow_http = match get(ALLOW_HTTP_VAR) {
            None => false,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "" | "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::new(format!(
                    "{ALLOW_HTTP_VAR} must be 1, true, yes or on (or 0, false, no, off), not {:?}",
                    v.chars().take(20).collect::<String>()
                )))
                }
            },
        };
        let [id, secret, user, pass] = std::mem::take(&mut values);
        let credentials = Self::new(id.trim(), secret, user.trim(), pass)
            .with_base_url(base)
            .allow_http(allow_http);
        credentials
            .check_transport()
            .map_err(|why| ConfigError::new(format!("{why}")))?;
        Ok(credentials)
    }

    /// Allows a plain `http` base URL for a host that is not loopback.
    ///
    /// Off by default: over `http` the client secret, the password and the
    /// tokens cross the network unencrypted, so a token request to such a
    /// base URL is refused with [`TokenErrorKind::Configuration`](crate::TokenErrorKind::Configuration)
    /// before anything is sent. Loopback hosts (`localhost`, `127.0.0.0/8`,
    /// `::1`: a mock server, a local proxy) need no opt-in. The environment's
    /// equivalent is `WOKELO_ALLOW_HTTP=1`, read by [`from_env`](Self::from_env).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Refuses to send secrets over plain `http` to a host that is not
    /// loopback unless that was opted into.
    pub(crate) fn check_transport(&self) -> Result<(), crate::TokenError> {
        if self.base.is_https() || self.base.is_loopback() || self.allow_http {
            return Ok(());
        }
        Err(crate::TokenError::new(
            crate::TokenErrorKind::Configuration,
            format!(
                "refusing to send the client secret and password in clear text: the base URL {} is http and its host is not this machine; use https, or opt in with {ALLOW_HTTP_VAR}=1 (Credentials::allow_http) for a server on a trusted network",
                self.base
            ),
        ))
    }

    /// Sets the API base URL (default `https://api.wokelo.ai`).
    pub fn with_base_url(mut self, base: ApiBase) -> Self {
        self.base = base;
        self
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The username (the user's e-mail).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The API base URL.
    pub fn base_url(&self) -> &ApiBase {
        &self.base
    }
}

/// The environment variable that opts into plain `http` to a host that is
/// not loopback (see [`Credentials::allow_http`]).
const ALLOW_HTTP_VAR: &str = "WOKELO_ALLOW_HTTP";

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("base_url", &self.base.as_str())
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_names_each_missing_variable() {
        let e = Credentials::from_lookup(lookup(&[
            ("WOKELO_CLIENT_ID", "id"),
            ("WOKELO_PASSWORD", "  "),
        ]))
        .unwrap_err();
        assert_eq!(
            e.missing_variables(),
            ["WOKELO_CLIENT_SECRET", "WOKELO_USERNAME", "WOKELO_PASSWORD"]
        );
        assert!(e.to_string().contains("WOKELO_CLIENT_SECRET"), "{e}");
    }

    #[test]
    fn from_env_reads_all_and_the_base_url() {
        let c = Credentials::from_lookup(lookup(&[
            ("WOKELO_CLIENT_ID", "id"),
            ("WOKELO_CLIENT_SECRET", "s3cret"),
            ("WOKELO_USERNAME", "a@b.c"),
            ("WOKELO_PASSWORD", "hunter2"),
            ("WOKELO_BASE_URL", "http://127.0.0.1:9999"),
        ]))
        .unwrap();
        assert_eq!(c.client_id(), "id");
        assert_eq!(c.username(), "a@b.c");
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:9999");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn a_bad_base_url_is_reported_even_with_credentials_missing() {
        let e = Credentials::from_lookup(lookup(&[("WOKELO_BASE_URL", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("invalid Wokelo base URL"), "{e}");
    }

    #[test]
    fn from_env_rejects_a_bad_base_url() {
        let e = Credentials::from_lookup(lookup(&[
            ("WOKELO_CLIENT_ID", "id"),
            ("WOKELO_CLIENT_SECRET", "s"),
            ("WOKELO_USERNAME", "u"),
            ("WOKELO_PASSWORD", "p"),
            ("WOKELO_BASE_URL", "api.wokelo.ai"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("invalid Wokelo base URL"), "{e}");
    }

    fn with_required(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs = vec![
            ("WOKELO_CLIENT_ID", "id"),
            ("WOKELO_CLIENT_SECRET", "s3cret-value"),
            ("WOKELO_USERNAME", "u@example.com"),
            ("WOKELO_PASSWORD", "hunter2-value"),
        ];
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn plain_http_to_another_host_needs_an_opt_in() {
        let e = Credentials::from_lookup(lookup(&with_required(&[(
            "WOKELO_BASE_URL",
            "http://api.wokelo.ai",
        )])))
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("clear text"), "{text}");
        assert!(text.contains("WOKELO_ALLOW_HTTP=1"), "{text}");
        assert!(!text.contains("s3cret-value") && !text.contains("hunter2-value"));

        for yes in ["1", "true", "YES", " on "] {
            let c = Credentials::from_lookup(lookup(&with_required(&[
                ("WOKELO_BASE_URL", "http://api.wokelo.ai"),
                ("WOKELO_ALLOW_HTTP", yes),
            ])))
            .unwrap();
            assert!(c.check_transport().is_ok(), "{yes}");
        }
        let e = Credentials::from_lookup(lookup(&with_required(&[
            ("WOKELO_BASE_URL", "http://api.wokelo.ai"),
            ("WOKELO_ALLOW_HTTP", "maybe"),
        ])))
        .unwrap_err();
        assert!(e.to_string().contains("WOKELO_ALLOW_HTTP must be"), "{e}");
    }

    #[test]
    fn https_and_loopback_need_no_opt_in() {
        for base in [
            "https://api.wokelo.ai",
            "http://127.0.0.1:9000",
            "http://localhost:1",
        ] {
            let c = Credentials::from_lookup(lookup(&with_required(&[("WOKELO_BASE_URL", base)])))
                .unwrap();
            assert!(c.check_transport().is_ok(), "{base}");
        }
        let c = Credentials::new("id", "s", "u", "p")
            .with_base_url("http://10.1.2.3:8080".parse().unwrap());
        let e = c.check_transport().unwrap_err();
        assert_eq!(e.kind(), crate::TokenErrorKind::Configuration);
        assert!(c.allow_http(true).check_transport().is_ok());
    }
}
