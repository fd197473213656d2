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
        }
    }

    /// Reads `WOKELO_CLIENT_ID`, `WOKELO_CLIENT_SECRET`, `WOKELO_USERNAME`,
    /// `WOKELO_PASSWORD` and, optionally, `WOKELO_BASE_URL`.
    ///
    /// # Errors
    ///
    /// Names every required variable that is unset, empty or not UTF-8, or
    /// says why `WOKELO_BASE_URL` is not a valid base URL.
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
        let [id, secret, user, pass] = std::mem::take(&mut values);
        Ok(Self::new(id.trim(), secret, user.trim(), pass).with_base_url(base))
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

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("base_url", &self.base.as_str())
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
}
