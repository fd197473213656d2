//! What a `401` from the API does: whether the request is sent again with a
//! new token, and what happens to the token it carried. One decision for the
//! tower service and the reqwest middleware.

use super::*;
use crate::challenge;

/// What to do with a `401` (see [`TokenCache::after_401`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After401 {
    /// Return the `401` to the caller as it is.
    Return,
    /// Wait for a token ([`Reason::Unauthorized`]) and send the request
    /// once more.
    Retry,
}

impl TokenCache {
    /// A `401` answered the request that carried the token of `generation`
    /// (its headers are `headers`); `replayable`: its body was kept.
    ///
    /// - A Bearer challenge naming an error a new token cannot fix
    ///   (`insufficient_scope`, `invalid_request`; RFC 6750 section 3.1):
    ///   returned, the token kept.
    /// - A token the API refused right after it was fetched (see
    ///   [`invalidate`](Self::invalidate)): returned, the token kept.
    /// - Otherwise the token is dropped if it is still the cached one; a
    ///   request whose body was not kept gets its `401` back and a fetch
    ///   starts for the next one, the others are retried.
    pub(crate) fn after_401(
        self: &Arc<Self>,
        headers: &http::HeaderMap,
        generation: u64,
        replayable: bool,
    ) -> After401 {
        if !challenge::new_token_may_help(headers) {
            tracing::debug!(
                generation,
                "API answered 401 with a Bearer error a new token cannot fix; returning it"
            );
            self.count_unauthorized(Unauthorized::Returned);
            return After401::Return;
        }
        let invalidated = self.invalidate(generation, replayable);
        if invalidated == Invalidation::Refused {
            tracing::debug!(
                generation,
                "API answered 401 to a token it refused right after it was fetched; returning it"
            );
            self.count_unauthorized(Unauthorized::Returned);
            return After401::Return;
        }
        if !replayable {
            tracing::warn!(
                generation,
                ?invalidated,
                "API answered 401; the request body cannot be replayed (streamed past the replay cap, or not sent whole), so the 401 is returned and the token refreshed for the next request"
            );
            self.prefetch(Reason::Unauthorized);
            self.count_unauthorized(Unauthorized::Returned);
            return After401::Return;
        }
        tracing::debug!(
            generation,
            ?invalidated,
            "API answered 401; retrying once with a fresh token"
        );
        self.count_unauthorized(Unauthorized::Retried);
        After401::Retry
    }

    /// The retry after a `401`, with the token of `generation` fetched for
    /// it, was answered with something else: the API takes fresh tokens, so
    /// a later `401` to this one (a revocation) is worth a new token even on
    /// a request that cannot be retried.
    pub(crate) fn after_retry_answered(&self, generation: u64) {
        let mut state = self.lock();
        if state
            .fetched_for_401
            .is_some_and(|(fetched, _)| fetched == generation)
        {
            state.fetched_for_401 = None;
        }
    }

    /// The retry after a `401`, with the token of `generation`, was
    /// answered `401` too: see [`refused_on_retry`](Self::refused_on_retry).
    pub(crate) fn after_second_401(&self, generation: u64) {
        tracing::warn!(
            generation,
            "API answered 401 to a freshly fetched token too; returning the 401"
        );
        self.refused_on_retry(generation);
        self.count_unauthorized(Unauthorized::Returned);
    }
}
