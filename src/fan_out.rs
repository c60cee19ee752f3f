//! Work fanned out through the `JOBS` queue, so a tenant of any number of
//! accounts fits the limits of one invocation. A run walks the users a page at
//! a time (each page one message, which hands over the next) and gives every
//! account a message of its own:
//! - reconciliation checks the account and records the result in D1
//!   (`reconcile_runs`, `reconcile_results`);
//! - retention archives the account's days before the cutoff, a step at a time
//!   (a step that leaves days hands the account on to a message of its own);
//! - the upstream-key mirror reads OpenRouter's key list a page a message.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{D1Database, Env, MessageBatch, MessageExt};

use crate::api::error::ApiError;
use crate::domain::time::to_iso;
use crate::queues;
use crate::store::{self, int, opt_text, text};

/// Users a job walks itself (reconciliation, a retention pass); past them it goes through the queue.
pub const INLINE_MAX: i64 = 1_000;
/// Users handed over per page message.
const PAGE: i64 = 100;
/// Users a retention page looks at (an index probe each); only those with old rows get a message.
const RETENTION_PAGE: i64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum Job {
    /// Hands over the users after `after` (by id), and the next page; `enumerated`: how many users the
    /// pages before it handed over (absent in a message of an earlier version).
    ReconcilePage {
        run_id: String,
        after: Option<String>,
        #[serde(default)]
        enumerated: Option<i64>,
    },
    /// Checks one account.
    ReconcileAccount { run_id: String, user_id: String },
    /// Hands over the users after `after` (by id) to a retention pass, and the next page.
    RetentionPage { cutoff: String, after: Option<String> },
    /// Archives one account's days before the cutoff, a step at a time.
    RetentionAccount { cutoff: String, user_id: String },
    /// Mirrors one page of OpenRouter's key list from `offset`, and hands on the next.
    MirrorPage { offset: usize },
}
crate::tag_first!(Job, "job");

fn d1(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// How long a reconciliation run and its results are kept: a run writes a row per account, and the cron
/// starts one every 15 minutes (50,000 accounts would add 4.8M rows a day, kept for ever).
const RUNS_KEPT_MS: i64 = 24 * 3600 * 1000;
/// Old runs forgotten at each start, oldest first, each in a statement of its own (a run's results are a
/// row per account): four a start, against the one each start adds, so a backlog goes too.
const RUNS_FORGOTTEN_A_START: usize = 4;

/// Starts a reconciliation run: records it, hands its first page to the queue, then forgets runs older
/// than `RUNS_KEPT_MS` (a few at a time; should that fail, the run goes on and the next start tries again).
pub async fn start_run(env: &Env, now_ms: i64) -> Result<String, ApiError> {
    let run_id = format!("rec-{now_ms}-{}", hex::encode(crate::api::random_bytes::<4>()));
    let db = crate::env::db(env).map_err(d1)?;
    db.prepare("INSERT INTO reconcile_runs (id, started_at) VALUES (?1, ?2)")
        .bind(&[text(&run_id), text(&to_iso(now_ms))])
        .map_err(d1)?
        .run()
        .await
        .map_err(d1)?;
    let queue = crate::env::jobs_queue(env).map_err(d1)?;
    queues::send(&queue, &Job::ReconcilePage { run_id: run_id.clone(), after: None, enumerated: Some(0) })
        .await
        .map_err(d1)?;
    if let Err(e) = forget_old_runs(&db, now_ms - RUNS_KEPT_MS).await {
        crate::log::job_error("forget_reconcile_runs", &e.to_string());
    }
    Ok(run_id)
}

/// Forgets the oldest runs started before `cutoff_ms`, at most `RUNS_FORGOTTEN_A_START`: each run's
/// results, then the run.
async fn forget_old_runs(db: &D1Database, cutoff_ms: i64) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let query = "SELECT id FROM reconcile_runs WHERE started_at < ?1 ORDER BY started_at LIMIT ?2";
    let limit = int(RUNS_FORGOTTEN_A_START as i64);
    let old: Vec<Id> = store::all(db, query, &[text(&to_iso(cutoff_ms)), limit]).await?;
    for run in old {
        db.batch(vec![
            db.prepare("DELETE FROM reconcile_results WHERE run_id = ?1").bind(&[text(&run.id)]).map_err(d1)?,
            db.prepare("DELETE FROM reconcile_runs WHERE id = ?1").bind(&[text(&run.id)]).map_err(d1)?,
        ])
        .await
        .map_err(d1)?;
    }
    Ok(())
}

/// Whether the tenant has more users than one invocation walks itself.
pub async fn past_inline(db: &D1Database) -> Result<bool, ApiError> {
    Ok(store::count(db, "SELECT COUNT(*) AS n FROM users", &[]).await? > INLINE_MAX)
}

/// Hands one job to the queue (the first page of a retention pass, a page of the upstream-key mirror).
pub async fn enqueue(env: &Env, job: Job) -> Result<(), ApiError> {
    queues::send(&crate::env::jobs_queue(env).map_err(d1)?, &job).await.map_err(d1)
}

/// Messages of one batch worked on at once (each account's object answers on its own).
const AT_ONCE: usize = 10;
/// D1 queries one invocation may spend (the platform allows 1,000), with room for retries inside jobs.
const QUERY_BUDGET: usize = 600;

impl Job {
    /// The most D1 queries the job makes.
    fn queries(&self) -> usize {
        match self {
            Job::ReconcilePage { .. } | Job::RetentionPage { .. } | Job::MirrorPage { .. } => 3,
            // The account's object reads D1 itself; the result (and the call to the object).
            Job::ReconcileAccount { .. } => 2,
            // The days, then per day two reads, the batch of four and the read-back.
            Job::RetentionAccount { .. } => 1 + 7 * crate::retention::ARCHIVES_PER_MESSAGE,
        }
    }
}

/// The queue's consumer: each message on its own, several at once; one that fails is retried by the queue.
/// Messages past the invocation's query budget are sent again as new messages (not retried, which would
/// count against their retries) for another invocation.
pub async fn consume(batch: MessageBatch<Value>, env: Env) -> worker::Result<()> {
    use futures_util::stream::{self, StreamExt};
    let env = &env;
    let mut spent = 0;
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for message in batch.raw_iter() {
        let job = queues::read::<Job>(&message);
        let cost = job.as_ref().map_or(0, Job::queries);
        if spent + cost > QUERY_BUDGET && !now.is_empty() {
            later.push((message, job));
        } else {
            spent += cost;
            now.push((message, job));
        }
    }
    if !later.is_empty() {
        let jobs: Vec<Job> = later.iter().filter_map(|(_, job)| job.as_ref().ok().cloned()).collect();
        match crate::env::jobs_queue(env).map_err(d1) {
            Ok(queue) => match queues::send_all(&queue, &jobs).await {
                Ok(()) => later.iter().for_each(|(message, _)| message.ack()),
                Err(_) => later.iter().for_each(|(message, _)| message.retry()),
            },
            Err(_) => later.iter().for_each(|(message, _)| message.retry()),
        }
    }
    stream::iter(now)
        .for_each_concurrent(AT_ONCE, |(message, job)| async move {
            let done = match job {
                Ok(job) => run(env, job).await,
                Err(e) => {
                    crate::log::job_error("jobs_queue", &format!("unreadable job: {e}"));
                    Ok(())
                }
            };
            match done {
                Ok(()) => message.ack(),
                Err(e) => {
                    crate::log::job_error("jobs_queue", &e.to_string());
                    message.retry();
                }
            }
        })
        .await;
    Ok(())
}

async fn run(env: &Env, job: Job) -> Result<(), ApiError> {
    let db = crate::env::db(env).map_err(d1)?;
    match job {
        Job::ReconcilePage { run_id, after, enumerated } => {
            let queue = crate::env::jobs_queue(env).map_err(d1)?;
            let (users, full) = users_page(&db, after.as_deref()).await?;
            let so_far = enumerated.map(|before| before + users.len() as i64);
            let mut jobs: Vec<Job> =
                users.iter().map(|u| Job::ReconcileAccount { run_id: run_id.clone(), user_id: u.clone() }).collect();
            if full {
                jobs.push(Job::ReconcilePage {
                    run_id: run_id.clone(),
                    after: users.last().cloned(),
                    enumerated: so_far,
                });
            }
            hand_on(env, &queue, &jobs).await?;
            // A page delivered twice (the queue delivers at least once) counts once: the count is the users
            // of this page and the pages before it, and a later page's count is never taken back.
            let update = match so_far {
                Some(n) => db
                    .prepare(
                        "UPDATE reconcile_runs SET enumerated = MAX(enumerated, ?2), walked = MAX(walked, ?3) \
                         WHERE id = ?1",
                    )
                    .bind(&[text(&run_id), int(n), int(i64::from(!full))]),
                // A page from an earlier version counts as it did (its run may stay not done).
                None => db
                    .prepare("UPDATE reconcile_runs SET enumerated = enumerated + ?2, walked = MAX(walked, ?3) WHERE id = ?1")
                    .bind(&[text(&run_id), int(users.len() as i64), int(i64::from(!full))]),
            };
            update.map_err(d1)?.run().await.map_err(d1)?;
            Ok(())
        }
        Job::RetentionPage { cutoff, after } => {
            let queue = crate::env::jobs_queue(env).map_err(d1)?;
            // Only accounts with rows before the cutoff get a message.
            let (mut users, next) =
                crate::retention::accounts_with_history(&db, after.as_deref(), &cutoff, RETENTION_PAGE).await?;
            // The operator's own requests are kept under the empty user id: the first page hands it over too.
            if after.is_none() {
                users.insert(0, String::new());
            }
            let mut jobs: Vec<Job> =
                users.into_iter().map(|user_id| Job::RetentionAccount { cutoff: cutoff.clone(), user_id }).collect();
            if next.is_some() {
                jobs.push(Job::RetentionPage { cutoff, after: next });
            }
            hand_on(env, &queue, &jobs).await
        }
        Job::MirrorPage { offset } => {
            let (_, more) = crate::api::mirror_page(env, offset).await?;
            if more {
                enqueue(env, Job::MirrorPage { offset: offset + crate::providers::key_management::PAGE }).await?;
            }
            Ok(())
        }
        Job::RetentionAccount { cutoff, user_id } => {
            let bucket = crate::env::archives(env).map_err(d1)?;
            let now_ms = js_sys::Date::now() as i64;
            let (_, more) = crate::retention::archive_account(
                env,
                &db,
                &bucket,
                &user_id,
                &cutoff,
                now_ms,
                crate::retention::ARCHIVES_PER_MESSAGE,
            )
            .await?;
            if more {
                let queue = crate::env::jobs_queue(env).map_err(d1)?;
                hand_on(env, &queue, &[Job::RetentionAccount { cutoff, user_id }]).await?;
            }
            Ok(())
        }
        Job::ReconcileAccount { run_id, user_id } => {
            let check = crate::api::reconcile_account(env, &user_id).await;
            let (agrees, drift, error) = match &check {
                Ok(c) => (c.is_none(), c.as_ref().map(Value::to_string), None),
                Err(e) => (false, None, Some(e.to_string())),
            };
            db.prepare(
                "INSERT OR REPLACE INTO reconcile_results (run_id, user_id, agrees, drift, error, checked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(&[
                text(&run_id),
                text(&user_id),
                int(i64::from(agrees)),
                opt_text(drift.as_deref()),
                opt_text(error.as_deref()),
                text(&to_iso(js_sys::Date::now() as i64)),
            ])
            .map_err(d1)?
            .run()
            .await
            .map_err(d1)?;
            Ok(())
        }
    }
}

/// Sends the jobs a job hands on (each twice under the test fault `FAULT_REPEAT_JOBS`, as a queue that
/// delivers at least once may).
async fn hand_on(env: &Env, queue: &worker::Queue, jobs: &[Job]) -> Result<(), ApiError> {
    queues::send_all(queue, jobs).await.map_err(d1)?;
    if crate::env::Config::get(env).faults.repeat_jobs {
        queues::send_all(queue, jobs).await.map_err(d1)?;
    }
    Ok(())
}

/// The ids of up to `PAGE` users after `after`, and whether the page is full (more may follow).
async fn users_page(db: &D1Database, after: Option<&str>) -> Result<(Vec<String>, bool), ApiError> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let query = "SELECT id FROM users WHERE id > ?1 ORDER BY id LIMIT ?2";
    let users: Vec<Id> = store::all(db, query, &[text(after.unwrap_or("")), int(PAGE)]).await?;
    let full = users.len() as i64 == PAGE;
    Ok((users.into_iter().map(|u| u.id).collect(), full))
}

/// A run's report: how far it is, and the accounts that disagree or could not be checked.
pub async fn report(env: &Env, run_id: Option<&str>) -> Result<Option<Value>, ApiError> {
    #[derive(Deserialize)]
    struct Run {
        id: String,
        started_at: String,
        enumerated: i64,
        walked: i64,
    }
    #[derive(Deserialize)]
    struct Bad {
        user_id: String,
        drift: Option<String>,
        error: Option<String>,
    }
    let db = crate::env::db(env).map_err(d1)?;
    let run = match run_id {
        Some(id) => db.prepare("SELECT * FROM reconcile_runs WHERE id = ?1").bind(&[text(id)]).map_err(d1)?,
        None => db.prepare("SELECT * FROM reconcile_runs ORDER BY started_at DESC, id DESC LIMIT 1"),
    };
    let Some(run) = run.first::<Run>(None).await.map_err(d1)? else { return Ok(None) };
    let counts =
        store::count(&db, "SELECT COUNT(*) AS n FROM reconcile_results WHERE run_id = ?1", &[text(&run.id)]).await?;
    let query = "SELECT user_id, drift, error FROM reconcile_results WHERE run_id = ?1 AND agrees = 0 ORDER BY user_id LIMIT 1000";
    let bad: Vec<Bad> = store::all(&db, query, &[text(&run.id)]).await?;
    let drift: Vec<Value> =
        bad.iter().filter_map(|b| serde_json::from_slice(b.drift.as_deref()?.as_bytes()).ok()).collect();
    let failed: Vec<Value> =
        bad.iter().filter_map(|b| Some(json!({ "user_id": b.user_id, "error": b.error.as_deref()? }))).collect();
    let done = run.walked != 0 && counts >= run.enumerated;
    Ok(Some(json!({
        "run_id": run.id, "started_at": run.started_at, "accounts_enumerated": run.enumerated,
        "accounts_checked": counts, "done": done, "drift": drift, "failed": failed,
    })))
}
