//! Asynchronous report jobs: created by a POST, advanced one step per status
//! poll, with a result once they finish.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug, Default)]
pub(crate) struct JobStore {
    jobs: HashMap<String, Job>,
}

#[derive(Debug)]
struct Job {
    polls: u32,
    fail: bool,
    input: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl JobStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Processing => "PROCESSING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
        }
    }
}

/// What the result endpoint finds.
#[derive(Debug)]
pub(crate) enum JobResult<'a> {
    NotReady,
    Done { status: JobStatus, input: &'a Value },
}

impl Job {
    /// The status seen after `progress` steps of work.
    fn status(&self, progress: u32, steps: u32) -> JobStatus {
        match progress {
            0 if steps > 0 => JobStatus::Pending,
            n if n < steps => JobStatus::Processing,
            _ if self.fail => JobStatus::Failed,
            _ => JobStatus::Completed,
        }
    }

    /// Whether a status poll has already reported the job finished.
    fn finished(&self, steps: u32) -> bool {
        self.polls > steps
    }
}

/// A random version-4 UUID in its usual hyphenated form.
fn random_uuid() -> String {
    let mut bits = fastrand::u128(..);
    bits &= !(0xf << 76);
    bits |= 0x4 << 76; // version 4
    bits &= !(0x3 << 62);
    bits |= 0x2 << 62; // RFC 4122 variant
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl JobStore {
    /// Creates a job from its request body; `"fail": true` makes it end `FAILED`.
    pub(crate) fn create(&mut self, input: Value) -> String {
        let fail = input.get("fail").and_then(Value::as_bool).unwrap_or(false);
        let id = random_uuid();
        self.jobs.insert(
            id.clone(),
            Job {
                polls: 0,
                fail,
                input,
            },
        );
        id
    }

    /// Records one status poll and returns the status it sees, `None` if the job
    /// is unknown.
    pub(crate) fn poll(&mut self, id: &str, steps: u32) -> Option<JobStatus> {
        let job = self.jobs.get_mut(id)?;
        // Poll number n (1-based) sees n - 1 steps of progress.
        let status = job.status(job.polls, steps);
        job.polls = job.polls.saturating_add(1);
        Some(status)
    }

    /// The job's result, `None` if the job is unknown.
    pub(crate) fn result(&self, id: &str, steps: u32) -> Option<JobResult<'_>> {
        let job = self.jobs.get(id)?;
        if !job.finished(steps) {
            return Some(JobResult::NotReady);
        }
        Some(JobResult::Done {
            status: job.status(steps, steps),
            input: &job.input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(store: &mut JobStore, id: &str, steps: u32, polls: usize) -> Vec<&'static str> {
        (0..polls)
            .map(|_| store.poll(id, steps).unwrap().as_str())
            .collect()
    }

    #[test]
    fn jobs_advance_one_step_per_poll() {
        let mut store = JobStore::default();
        let id = store.create(Value::Null);
        assert!(matches!(store.result(&id, 3), Some(JobResult::NotReady)));
        assert_eq!(
            statuses(&mut store, &id, 3, 5),
            [
                "PENDING",
                "PROCESSING",
                "PROCESSING",
                "COMPLETED",
                "COMPLETED"
            ]
        );
        assert!(matches!(
            store.result(&id, 3),
            Some(JobResult::Done {
                status: JobStatus::Completed,
                ..
            })
        ));
        let failing = store.create(serde_json::json!({"fail": true}));
        assert_eq!(statuses(&mut store, &failing, 1, 2), ["PENDING", "FAILED"]);
        let instant = store.create(Value::Null);
        assert_eq!(statuses(&mut store, &instant, 0, 1), ["COMPLETED"]);
        assert!(store.poll("unknown", 2).is_none());
        assert!(store.result("unknown", 2).is_none());
    }

    #[test]
    fn request_ids_look_like_uuid_v4() {
        let id = random_uuid();
        let groups: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, random_uuid());
    }
}
