//! One fetch from the token source: traced, retried with backoff, bounded by the timeout.

use super::*;

impl TokenCache {
    /// One fetch, traced: through the shared store if there is one, else
    /// straight from the source.
    /// `refresh_spent`: `last`'s refresh token may have been presented by a
    /// fetch whose answer was lost; it is not presented again.
    pub(super) async fn run_fetch(
        &self,
        last: Option<Arc<Entry>>,
        reason: Reason,
        refresh_spent: bool,
    ) -> FetchOutput {
        let span = tracing::info_span!(
            "wokelo_auth.token_fetch",
            source = self.source.name(),
            store = self.store.name(),
            reason = reason.as_str(),
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let deadline = after(started, self.config.fetch_timeout);
        let mut attempts = 0;
        let output = async {
            if self.store.is_external() {
                self.fetch_shared(last, reason, deadline, &mut attempts)
                    .await
            } else {
                let current = last.map(|e| match refresh_spent {
                    true => e.token.without_refresh_token(),
                    false => e.token.clone(),
                });
                let (token, requested_at) = self
                    .fetch_from_source(current, deadline, &mut attempts)
                    .await?;
                self.entry(token, requested_at, fastrand::u64(..))
            }
        }
        .instrument(span.clone())
        .await;
        span.record("attempts", attempts);
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        match &output {
            Ok(entry) => {
                span.record("outcome", if attempts == 0 { "adopted" } else { "ok" });
                tracing::info!(
                    parent: &span,
                    generation = entry.generation,
                    expires_in_s = entry.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                    "token acquired"
                );
            }
            Err(e) => {
                span.record("outcome", tracing::field::debug(e.kind()));
                tracing::warn!(parent: &span, error = %e, "token fetch failed");
            }
        }
        output
    }

    /// The source, retried on transient failures with exponential backoff
    /// and jitter (or `Retry-After`), within `deadline`. Returns the token and
    /// when it was requested (its lifetime counts from then).
    pub(super) async fn fetch_from_source(
        &self,
        current: Option<Token>,
        deadline: Instant,
        attempts: &mut u32,
    ) -> Result<(Token, Instant), TokenError> {
        loop {
            *attempts += 1;
            self.counters.0.attempt();
            let requested_at = Instant::now();
            let outcome = tokio::time::timeout_at(deadline, self.source.fetch(current.as_ref()))
                .await
                .unwrap_or_else(|_| Err(self.timed_out("the token endpoint did not answer")));
            let error = match outcome {
                Ok(token) => return Ok((token, requested_at)),
                Err(e) => e,
            };
            let retryable =
                error.kind() == TokenErrorKind::Unavailable && *attempts <= self.config.max_retries;
            let delay = error.retry_after().unwrap_or_else(|| {
                crate::backoff::jittered(
                    self.config.retry_backoff,
                    self.config.max_retry_backoff,
                    *attempts,
                )
            });
            if !retryable || after(Instant::now(), delay) >= deadline {
                return Err(error);
            }
            tracing::debug!(
                attempt = *attempts,
                error = %error,
                delay_ms = delay.as_millis() as u64,
                "token fetch failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    pub(super) fn timed_out(&self, what: &str) -> TokenError {
        TokenError::new(
            TokenErrorKind::TimedOut,
            format!("{what} within {:?}", self.config.fetch_timeout),
        )
    }
}
