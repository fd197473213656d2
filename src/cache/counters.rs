//! What the cache counts for [`AuthSnapshot`](crate::AuthSnapshot): token
//! fetches by reason and outcome, and what `401`s led to.
//!
//! Every counter is written on a slow path only (a fetch starting or
//! completing, an attempt on the token source, a `401`), never by a request
//! that finds a token cached.

use super::*;

/// The cache's counters, on a cache line of their own so that counting
/// does not evict what the slow path reads (see [`TokenCache`]).
#[derive(Default)]
pub(super) struct Counters {
    started: [AtomicU64; REASONS],
    succeeded: AtomicU64,
    failed: [AtomicU64; KINDS],
    attempts: AtomicU64,
    tokens_dropped: AtomicU64,
    retried: AtomicU64,
    returned: AtomicU64,
}

const REASONS: usize = 4;
const KINDS: usize = 5;

/// What the layer did with a `401` the API answered to its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unauthorized {
    /// Sent once more with a new token.
    Retried,
    /// Handed to the caller as it is.
    Returned,
}

impl Reason {
    fn index(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::RefreshAhead => 1,
            Self::Unauthorized => 2,
            Self::Forced => 3,
        }
    }
}

fn kind_index(kind: TokenErrorKind) -> usize {
    match kind {
        TokenErrorKind::CredentialsRejected => 0,
        TokenErrorKind::Unavailable => 1,
        TokenErrorKind::TimedOut => 2,
        TokenErrorKind::InvalidResponse => 3,
        TokenErrorKind::Configuration => 4,
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn started(&self, reason: Reason) {
        bump(&self.started[reason.index()]);
    }

    pub(super) fn completed(&self, output: &FetchOutput) {
        match output {
            Ok(_) => bump(&self.succeeded),
            Err(e) => bump(&self.failed[kind_index(e.kind())]),
        }
    }

    pub(super) fn attempt(&self) {
        bump(&self.attempts);
    }

    pub(super) fn token_dropped(&self) {
        bump(&self.tokens_dropped);
    }

    pub(super) fn unauthorized(&self, what: Unauthorized) {
        bump(match what {
            Unauthorized::Retried => &self.retried,
            Unauthorized::Returned => &self.returned,
        });
    }

    pub(super) fn fetches(&self) -> FetchCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = |r: Reason| read(&self.started[r.index()]);
        let failed = |k: TokenErrorKind| read(&self.failed[kind_index(k)]);
        FetchCounts {
            missing: started(Reason::Missing),
            refresh_ahead: started(Reason::RefreshAhead),
            unauthorized: started(Reason::Unauthorized),
            forced: started(Reason::Forced),
            succeeded: read(&self.succeeded),
            failed: ErrorKindCounts {
                credentials_rejected: failed(TokenErrorKind::CredentialsRejected),
                unavailable: failed(TokenErrorKind::Unavailable),
                timed_out: failed(TokenErrorKind::TimedOut),
                invalid_response: failed(TokenErrorKind::InvalidResponse),
                configuration: failed(TokenErrorKind::Configuration),
            },
            attempts: read(&self.attempts),
        }
    }

    pub(super) fn unauthorized_counts(&self) -> UnauthorizedCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UnauthorizedCounts {
            tokens_dropped: read(&self.tokens_dropped),
            retried: read(&self.retried),
            returned: read(&self.returned),
        }
    }
}

impl TokenCache {
    /// Counts what the layer did with a `401` to its token. Called after a
    /// `401` only, never on the hot path.
    pub(crate) fn count_unauthorized(&self, what: Unauthorized) {
        self.counters.0.unauthorized(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_kind_has_its_own_counter() {
        let counters = Counters::default();
        for (n, reason) in [
            Reason::Missing,
            Reason::RefreshAhead,
            Reason::Unauthorized,
            Reason::Forced,
        ]
        .into_iter()
        .enumerate()
        {
            for _ in 0..=n {
                counters.started(reason);
            }
        }
        for (n, kind) in [
            TokenErrorKind::CredentialsRejected,
            TokenErrorKind::Unavailable,
            TokenErrorKind::TimedOut,
            TokenErrorKind::InvalidResponse,
            TokenErrorKind::Configuration,
        ]
        .into_iter()
        .enumerate()
        {
            for _ in 0..=n {
                counters.completed(&Err(TokenError::new(kind, "x")));
            }
            assert_eq!(counters.fetches().failed.get(kind), n as u64 + 1);
        }
        let fetches = counters.fetches();
        assert_eq!(
            (
                fetches.missing,
                fetches.refresh_ahead,
                fetches.unauthorized,
                fetches.forced
            ),
            (1, 2, 3, 4)
        );
        assert_eq!(fetches.started(), 10);
        assert_eq!(fetches.failed.total(), 15);
        assert_eq!(fetches.succeeded, 0);
    }
}
