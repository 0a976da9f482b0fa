//! Acceptance: a batch of submissions validated, limited, made durable and
//! queued together. A single notification is a batch of one.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

use std::sync::{Arc, Mutex};

use super::commit::{commit, Carry, Job, Made, Row};
use super::prepare::{finish, folds, unicast, Answer, Draft, Prepared, Who};
use super::{validate, AcceptError, Accepted, Acceptor, NotifyRequest, Submission};
use crate::auth::notifier::NotifierAuth;
use crate::ids::{new_timed_id, now_millis};
use crate::notification::TargetSpec;
use crate::store::{Acceptance, Build, Built, RegistrationState, StoreError};

/// Registration ids looked up per statement.
const LOOKUP_CHUNK: usize = 1000;

/// Where a submission stands on its way through acceptance.
enum Item {
    Done(Result<Accepted, AcceptError>),
    /// Shared with the store's build of it, when the store builds it.
    New(Arc<Draft>),
}

impl Acceptor {
    /// Validates, stores (idempotently) and enqueues a notification; answers
    /// only once it is durable. The API reads its own submissions
    /// ([`Acceptor::submit`]); this takes JSON, as the tests write it.
    #[cfg(test)]
    pub async fn accept(
        &self,
        auth: &NotifierAuth,
        idempotency_key: Option<&str>,
        body: serde_json::Value,
    ) -> Result<Accepted, AcceptError> {
        let submission = Submission::Json {
            idempotency_key: idempotency_key.map(str::to_owned),
            body,
        };
        self.submit(auth, submission).await
    }

    /// Accepts one submission: [`Acceptor::accept_batch`] of one.
    pub async fn submit(
        &self,
        auth: &NotifierAuth,
        submission: Submission,
    ) -> Result<Accepted, AcceptError> {
        self.accept_batch(auth, vec![submission])
            .await?
            .pop()
            .unwrap_or(Err(AcceptError::Stopped("no answer".into())))
    }

    /// Accepts several notifications under one authentication. The outer error
    /// refuses the whole batch (rate limit, backpressure) with nothing stored;
    /// otherwise each submission has its own answer, in order. Limits are
    /// charged once for the batch, the target registrations are looked up
    /// together, and the writes share group commits.
    pub async fn accept_batch(
        &self,
        auth: &NotifierAuth,
        submissions: Vec<Submission>,
    ) -> Result<Vec<Result<Accepted, AcceptError>>, AcceptError> {
        let mut items = Vec::with_capacity(submissions.len());
        for submission in submissions {
            items.push(self.draft(auth, submission).await);
        }
        let drafts: Vec<&Arc<Draft>> = items
            .iter()
            .filter_map(|item| match item {
                Item::New(draft) => Some(draft),
                Item::Done(_) => None,
            })
            .collect();
        if drafts.is_empty() {
            return Ok(items
                .into_iter()
                .filter_map(|item| match item {
                    Item::Done(answer) => Some(answer),
                    Item::New(_) => None,
                })
                .collect());
        }
        self.shed_when_behind(&auth.app_id)?;
        let cost: f64 = drafts
            .iter()
            .map(|d| match &d.targets {
                TargetSpec::Registrations(ids) => ids.len() as f64,
                _ => 1.0,
            })
            .sum();
        self.charge(auth, cost).await?;
        let redrive_at = now_millis() + self.settings.redrive_after.as_millis() as i64;
        // A draft to registrations by id without inbox content is built by the
        // store in its write, from the registrations read in that transaction;
        // the others are looked up (together) and prepared here.
        let prepared_here: Vec<&Draft> = drafts
            .iter()
            .map(|d| d.as_ref())
            .filter(|d| !folds(d))
            .collect();
        let states = self.lookup(&prepared_here).await?;
        // From here on the work must not depend on the caller staying: a client
        // that goes away (a timeout, a closed connection) drops this future, and
        // a commit whose task was never queued would wait for the sweep. The
        // writes, their count and the enqueue run as their own task.
        // The rows move to the commit; what answers each draft stays here.
        let mut jobs = Vec::with_capacity(drafts.len());
        let mut pending = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let (key, hash) = (draft.key.clone(), draft.request_hash.clone());
            if folds(draft) {
                let made = Arc::new(Mutex::new(None));
                jobs.push(Job::Accept(
                    Self::deferred(auth, draft, redrive_at, made.clone()),
                    made.clone(),
                ));
                pending.push(Ok((Answer::Made(made), key, hash)));
                continue;
            }
            match self.prepare(auth, draft, &states).await {
                Err(e) => pending.push(Err(e)),
                Ok(p) => {
                    jobs.push(Job::Row(Box::new(Row {
                        notification: p.row,
                        content: p.content,
                        deliveries: p.deliveries,
                        inbox: p.inbox,
                        audit: p.audit,
                    })));
                    pending.push(Ok((Answer::Ready(p.answer), key, hash)));
                }
            }
        }
        let outcomes = tokio::spawn(commit(
            self.store.clone(),
            self.queue.clone(),
            self.handoff.clone(),
            jobs,
            redrive_at,
            self.settings.handoff_limit,
        ))
        .await
        .map_err(|e| AcceptError::Stopped(e.to_string()))?;
        // The drafts' answers, in the drafts' order: a preparation failure, or
        // the outcome of its write.
        let mut outcomes = outcomes.into_iter();
        let mut answers = Vec::with_capacity(pending.len());
        for p in pending {
            let answer = match p {
                Err(e) => Err(e),
                Ok((answer, key, request_hash)) => match outcomes.next() {
                    Some(Ok(())) => answer
                        .get()
                        .ok_or_else(|| AcceptError::Stopped("no answer".into())),
                    Some(Err(StoreError::Conflict(_))) if key.is_some() => {
                        // A concurrent request with the same key won the race.
                        let key = key.as_deref().unwrap_or_default();
                        self.replay(auth, key, &request_hash)
                            .await
                            .and_then(|previous| previous.ok_or(AcceptError::InProgress))
                    }
                    Some(Err(e)) => Err(e.into()),
                    None => Err(AcceptError::Stopped("no answer".into())),
                },
            };
            answers.push(answer);
        }
        let mut answers = answers.into_iter();
        Ok(items
            .into_iter()
            .map(|item| match item {
                Item::Done(answer) => answer,
                Item::New(_) => answers
                    .next()
                    .unwrap_or(Err(AcceptError::Stopped("no answer".into()))),
            })
            .collect())
    }

    /// Hashes, replays (a known key) or validates one submission.
    async fn draft(&self, auth: &NotifierAuth, submission: Submission) -> Item {
        let (key, request_hash, request) = match submission {
            Submission::Parsed(request) => (None, String::new(), Ok(*request)),
            Submission::Json {
                idempotency_key: None,
                body,
            } => (None, String::new(), parse(body)),
            Submission::Json {
                idempotency_key: Some(key),
                body,
            } => {
                // The hash tells a retry from a different request under the
                // same key; without a key it is not kept.
                let request_hash = match serde_json::to_vec(&body) {
                    Ok(bytes) => hex::encode(Sha256::digest(bytes)),
                    Err(e) => return Item::Done(Err(e.into())),
                };
                match self.replay(auth, &key, &request_hash).await {
                    Ok(Some(previous)) => return Item::Done(Ok(previous)),
                    Ok(None) => {}
                    Err(e) => return Item::Done(Err(e)),
                }
                (Some(key), request_hash, parse(body))
            }
        };
        let max_content = self.settings.max_content_bytes;
        let parsed = request.and_then(|mut request| {
            let targets_json = serde_json::to_string(&request.targets)?;
            let plan = request.content.take();
            let (targets, mut content, ttl) = validate(request)?;
            let plan = plan
                .map(|c| super::content::plan(c, &targets, ttl, max_content))
                .transpose()?;
            content.inbox = plan.is_some();
            // Written here, beside the request, not in the group's write.
            let content_json = serde_json::to_string(&content)?;
            Ok((targets_json, targets, content, content_json, ttl, plan))
        });
        match parsed {
            Ok((targets_json, targets, content, content_json, ttl, plan)) => {
                Item::New(Arc::new(Draft {
                    key,
                    request_hash,
                    targets,
                    targets_json,
                    content,
                    content_json,
                    ttl,
                    plan,
                }))
            }
            Err(e) => Item::Done(Err(e)),
        }
    }

    /// Charges the notifier's and the app's per-target budgets.
    async fn charge(&self, auth: &NotifierAuth, cost: f64) -> Result<(), AcceptError> {
        let limits = self.limiter.app_limits(&auth.app_id).await?;
        let buckets: Vec<_> = [
            crate::limits::Limiter::bucket(
                format!("notifier-targets:{}", auth.notifier.id),
                limits.notifier_notifications_per_second,
                cost,
            ),
            crate::limits::Limiter::bucket(
                format!("app-targets:{}", auth.app_id),
                limits.app_notifications_per_second,
                cost,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.limiter.enforce(&buckets, "notification").await?;
        Ok(())
    }

    /// Every registration the drafts name, looked up together.
    async fn lookup(
        &self,
        drafts: &[&Draft],
    ) -> Result<HashMap<String, RegistrationState>, AcceptError> {
        let mut ids: Vec<String> = drafts
            .iter()
            .filter_map(|d| match &d.targets {
                TargetSpec::Registrations(ids) => Some(ids.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut states = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            for state in self.store.registration_states(chunk).await? {
                states.insert(state.id.clone(), state);
            }
        }
        Ok(states)
    }

    /// The row, deliveries, audit entry and answer of one draft.
    async fn prepare(
        &self,
        auth: &NotifierAuth,
        draft: &Draft,
        states: &HashMap<String, RegistrationState>,
    ) -> Result<Prepared, AcceptError> {
        let now = now_millis();
        let id = new_timed_id("ntf", now);
        let who = Who::of(auth);
        let (mut deliveries, mut accepted, mut rejected) = match &draft.targets {
            TargetSpec::Registrations(ids) => unicast(&who.app_id, ids, states),
            other => {
                let count = self
                    .store
                    .count_targets(&auth.app_id, other.fanout_aliases())
                    .await?;
                (Vec::new(), count, Vec::new())
            }
        };
        let expires_at = now + (draft.ttl as i64) * 1000;
        let inbox = match &draft.plan {
            None => Vec::new(),
            Some(plan) => {
                let sealed = self
                    .seal(plan, &auth.app_id, &id, (now, expires_at), &mut deliveries)
                    .await?;
                accepted = deliveries.len() as i64;
                rejected.extend(sealed.rejected);
                sealed.items
            }
        };
        finish(
            &who,
            draft,
            (id, now),
            (deliveries, accepted, rejected),
            inbox,
        )
    }

    /// A draft to registrations by id, with no inbox content, as an
    /// acceptance the store builds in its write: the registrations are read
    /// in the transaction that inserts the notification, and `made` receives
    /// what the build made of them (the last build, if there were several).
    fn deferred(
        auth: &NotifierAuth,
        draft: &Arc<Draft>,
        redrive_at: i64,
        made: Arc<Mutex<Option<Made>>>,
    ) -> Acceptance {
        let now = now_millis();
        let id = new_timed_id("ntf", now);
        let who = Who::of(auth);
        let TargetSpec::Registrations(ids) = &draft.targets else {
            unreachable!("only drafts to registrations are deferred");
        };
        let registrations = ids.clone();
        let draft = Arc::clone(draft);
        let build: Build = Arc::new(move |states| {
            let TargetSpec::Registrations(ids) = &draft.targets else {
                unreachable!("only drafts to registrations are deferred");
            };
            let prepared = finish(
                &who,
                &draft,
                (id.clone(), now),
                unicast(&who.app_id, ids, states),
                Vec::new(),
            )
            .map_err(|e| StoreError::Other(anyhow::anyhow!("building a notification: {e}")))?;
            let built = Built {
                row: prepared.row.clone(),
                deliveries: prepared
                    .deliveries
                    .iter()
                    .map(|d| d.registration_id.clone())
                    .collect(),
                audit: prepared.audit,
            };
            *made.lock().unwrap_or_else(|p| p.into_inner()) = Some(Made {
                carry: Some(Carry {
                    notification: prepared.row,
                    content: prepared.content,
                    deliveries: prepared.deliveries,
                }),
                answer: prepared.answer,
            });
            Ok(built)
        });
        Acceptance {
            registrations,
            redrive_at,
            build,
        }
    }

    /// Backpressure: refuses new notifications (503 + Retry-After) while the
    /// dispatcher is behind — more deliveries ready to go than `max_queue_depth` —
    /// or while this app alone has more than that queued (its own deliveries
    /// waiting for a retry or an open circuit included: they are its backlog, and
    /// never another app's).
    fn shed_when_behind(&self, app_id: &str) -> Result<(), AcceptError> {
        let max_depth = self.settings.max_queue_depth;
        if max_depth == 0 {
            return Ok(());
        }
        let ready = self.depths.ready();
        let app_depth = self.depths.of_app(app_id);
        let detail = if app_depth > max_depth {
            format!(
            "this app has {app_depth} deliveries queued (more than max_queue_depth = {max_depth}); retry later"
        )
        } else if ready > max_depth {
            format!(
            "{ready} deliveries are waiting for the dispatcher (more than max_queue_depth = {max_depth}); retry later"
        )
        } else {
            return Ok(());
        };
        metrics::counter!(crate::telemetry::names::NOTIFICATIONS_SHED).increment(1);
        Err(AcceptError::Behind(detail))
    }

    async fn replay(
        &self,
        auth: &NotifierAuth,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<Accepted>, AcceptError> {
        let Some(previous) = self
            .store
            .find_idempotent(&auth.app_id, &auth.notifier.id, key)
            .await?
        else {
            return Ok(None);
        };
        if previous.request_hash != request_hash {
            return Err(AcceptError::KeyReused);
        }
        let answer = serde_json::from_str(previous.response.as_deref().unwrap_or_default())?;
        Ok(Some(answer))
    }
}

/// A submitted JSON body as a notify request (`422` when it is not one).
fn parse(body: serde_json::Value) -> Result<NotifyRequest, AcceptError> {
    serde_json::from_value(body).map_err(|e| AcceptError::Invalid(e.to_string()))
}
