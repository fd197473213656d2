//! [`WokeloAuthLayer`] and its builder.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use http::Uri;
use tower_layer::Layer;

use crate::{
    cache::{CacheConfig, TokenCache},
    replay::DEFAULT_MAX_REPLAY_BODY_BYTES,
    store::TokenStore,
    ApiBase, TokenHandle, TokenSource, WokeloAuth,
};

/// What every clone of the service shares: the token cache and the settings.
pub(crate) struct Auth {
    pub(crate) cache: Arc<TokenCache>,
    pub(crate) base: ApiBase,
    pub(crate) max_replay_body_bytes: usize,
    /// `base` is [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL) because
    /// neither the builder nor the source named one.
    base_defaulted: bool,
    /// The warning that a request does not match a defaulted base was
    /// logged (see [`Auth::unmatched_origin`]).
    warned_origin: AtomicBool,
}

impl Auth {
    /// A request that is not for the API origin, and goes out without a
    /// token. When the origin is the default one, no one chose it: a source
    /// that wraps [`PasswordGrant`](crate::PasswordGrant) without forwarding
    /// [`TokenSource::api_base`] silently sends every request to the real
    /// API's base unauthenticated. Says so once per layer, naming the fix.
    /// Called only for requests that do not match, off the hot path.
    #[cold]
    #[inline(never)]
    pub(crate) fn unmatched_origin(&self, uri: &Uri) {
        if !self.base_defaulted || self.warned_origin.swap(true, Ordering::Relaxed) {
            return;
        }
        // The request's origin only: its path and query may hold secrets,
        // and so may user info in its authority.
        let origin = match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            },
            _ => "a relative URI".to_owned(),
        };
        tracing::warn!(
            request_origin = %origin,
            api_base = %self.base,
            "a request to {origin} does not match the API origin {}, so it is sent without a token; \
             that origin is the default, as neither WokeloAuthBuilder::api_base nor the token source \
             (TokenSource::api_base) names one: if the API is at {origin}, set WokeloAuthBuilder::api_base, \
             or forward TokenSource::api_base from a source that wraps another (logged once per layer)",
            self.base
        );
    }
}

/// A [`Layer`] that authenticates requests to the Wokelo API.
///
/// Every service it builds, and every clone of those, shares one token
/// cache: one login for all of them. See the [crate docs](crate) for an
/// example and for what happens on first use, expiry, `401` and failures.
#[derive(Clone)]
pub struct WokeloAuthLayer {
    auth: Arc<Auth>,
}

impl WokeloAuthLayer {
    /// A layer with the default settings, getting tokens from `source`.
    pub fn new(source: impl TokenSource) -> Self {
        Self::builder(source).build()
    }

    /// A builder to tune timeouts, retries and the replay cap.
    pub fn builder(source: impl TokenSource) -> WokeloAuthBuilder {
        WokeloAuthBuilder {
            source: Box::new(source),
            base: None,
            max_replay_body_bytes: DEFAULT_MAX_REPLAY_BODY_BYTES,
            cache: CacheConfig::default(),
            store: None,
        }
    }

    /// The API base URL whose origin gets the token.
    pub fn api_base(&self) -> &ApiBase {
        &self.auth.base
    }

    /// A handle on the layer's token: read it, refresh it, drop it, log in
    /// eagerly, take a snapshot of the cache for a health endpoint. Shares
    /// the cache of every service this layer builds. See
    /// [`TokenHandle`].
    pub fn handle(&self) -> TokenHandle {
        TokenHandle::new(self.auth.clone())
    }

    /// The token cache and settings every service of this layer shares.
    #[cfg(any(feature = "rustls", feature = "reqwest"))]
    pub(crate) fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }
}

impl<S: Clone> Layer<S> for WokeloAuthLayer {
    type Service = WokeloAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WokeloAuth::from_parts(inner, self.auth.clone())
    }
}

impl fmt::Debug for WokeloAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WokeloAuthLayer")
            .field("api_base", &self.auth.base)
            .field("max_replay_body_bytes", &self.auth.max_replay_body_bytes)
            .field("cache", &self.auth.cache)
            .finish()
    }
}

/// Builds a [`WokeloAuthLayer`] with settings other than the defaults.
///
/// ```
/// use std::time::Duration;
/// use wokelo_auth::{StaticToken, WokeloAuthLayer};
///
/// let layer = WokeloAuthLayer::builder(StaticToken::new("t"))
///     .token_timeout(Duration::from_secs(10))
///     .max_replay_body_bytes(1024 * 1024)
///     .build();
/// # let _ = layer;
/// ```
pub struct WokeloAuthBuilder {
    source: Box<dyn TokenSource>,
    base: Option<ApiBase>,
    max_replay_body_bytes: usize,
    cache: CacheConfig,
    store: Option<Box<dyn TokenStore>>,
}

impl WokeloAuthBuilder {
    /// Persists the token through `store`: a [`FileStore`](crate::store::FileStore)
    /// for a command-line tool, a `RedisStore` (feature `redis`) to share one
    /// token and one refresher across a fleet. Default: this process only.
    pub fn token_store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// How often a token cached in this process is compared with a shared
    /// store's, to pick up a token another process refreshed (default
    /// 60 s). Expiry and `401`s look at the store in any case.
    pub fn store_sync_interval(mut self, interval: Duration) -> Self {
        self.cache.store_sync_interval = interval;
        self
    }

    /// The API base URL whose origin (scheme, host, port) gets the token.
    /// Default: the source's ([`TokenSource::api_base`]), else
    /// `https://api.wokelo.ai`.
    pub fn api_base(mut self, base: ApiBase) -> Self {
        self.base = Some(base);
        self
    }

    /// The most memory kept to replay a request's body after a `401`
    /// (default 64 KiB). A larger body is streamed but not retried.
    ///
    /// The cap counts everything held for the replay: the body's bytes plus
    /// the layer's bookkeeping, about 120 bytes per request and 64 to 160
    /// per chunk kept (the chunk list and the record a `Bytes` allocates
    /// when first shared). A `Full<Bytes>` body is one chunk; a body
    /// streamed in small chunks gets correspondingly less room.
    pub fn max_replay_body_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_body_bytes = bytes;
        self
    }

    /// The time one token fetch may take, retries included (default 30 s).
    pub fn token_timeout(mut self, timeout: Duration) -> Self {
        self.cache.fetch_timeout = timeout;
        self
    }

    /// How often a transient token-endpoint failure (connection error, `408`,
    /// `429`, `5xx`) is retried within one fetch (default 3).
    pub fn token_retries(mut self, retries: u32) -> Self {
        self.cache.max_retries = retries;
        self
    }

    /// The first delay between token fetch retries (default 200 ms); it
    /// doubles each retry, up to 10 s, with jitter. `Retry-After` wins.
    pub fn token_retry_backoff(mut self, backoff: Duration) -> Self {
        self.cache.retry_backoff = backoff;
        self
    }

    /// After the token endpoint rejects the credentials, requests fail fast
    /// with that error for this long before one new attempt (default 30 s,
    /// at most [`MAX_FAILURE_WINDOW`](crate::MAX_FAILURE_WINDOW): a longer
    /// one is shortened to it).
    pub fn credentials_backoff(mut self, window: Duration) -> Self {
        self.cache.failure_backoff = window;
        self
    }

    /// How long a token that the API refused right after it was fetched
    /// keeps its `401`s (default 30 s, at most
    /// [`MAX_FAILURE_WINDOW`](crate::MAX_FAILURE_WINDOW)).
    ///
    /// When the retry after a `401` is answered `401` again with a freshly
    /// fetched token, a new token does not help: the API refuses this
    /// account (or this request) whatever the token. For this long, further
    /// `401`s to that token are returned as they are, without fetching
    /// another token or retrying, so that an API refusing every token costs
    /// one token request per window, not one per call. A `401` whose Bearer
    /// challenge names an error other than `invalid_token` (RFC 6750
    /// section 3.1: `insufficient_scope`, `invalid_request`) is never
    /// retried in the first place.
    pub fn unauthorized_backoff(mut self, window: Duration) -> Self {
        self.cache.unauthorized_backoff = window;
        self
    }

    /// The longest time before expiry at which a refresh starts (default
    /// 5 min). The margin is 10-20 % of the lifetime, capped by this.
    pub fn max_refresh_margin(mut self, margin: Duration) -> Self {
        self.cache.max_refresh_margin = margin;
        self
    }

    /// The lifetime assumed for a token that states none (default
    /// [`DEFAULT_LIFETIME`](crate::DEFAULT_LIFETIME), one hour).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.cache.default_lifetime = lifetime;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> WokeloAuthLayer {
        let named = self.base.or_else(|| self.source.api_base().cloned());
        let base_defaulted = named.is_none();
        if base_defaulted {
            tracing::debug!(
                source = self.source.name(),
                api_base = crate::DEFAULT_BASE_URL,
                "neither WokeloAuthBuilder::api_base nor the token source names an API base; using the default"
            );
        }
        let base = named.unwrap_or_default();
        let store_key = self
            .source
            .store_key()
            .unwrap_or_else(|| format!("{base}|{}", self.source.name()));
        WokeloAuthLayer {
            auth: Arc::new(Auth {
                cache: Arc::new(TokenCache::new(
                    self.source,
                    self.store,
                    store_key,
                    self.cache,
                )),
                base,
                max_replay_body_bytes: self.max_replay_body_bytes,
                base_defaulted,
                warned_origin: AtomicBool::new(false),
            }),
        }
    }
}

impl fmt::Debug for WokeloAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WokeloAuthBuilder")
            .field("source", &self.source.name())
            .field("api_base", &self.base)
            .field("max_replay_body_bytes", &self.max_replay_body_bytes)
            .field("cache", &self.cache)
            .field("store", &self.store.as_ref().map(|s| s.name()))
            .finish()
    }
}
