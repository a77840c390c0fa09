//! Delivery of alert events to tenants' webhooks, at least once.
//!
//! [`WebhookDelivery`] consumes `alerts` in consumer group `weir-alert-webhooks`. For each
//! event whose tenant has a webhook ([`AlertConfig::webhook`], looked up again before every
//! attempt, so a corrected URL or secret applies to the retries), it POSTs the event's JSON,
//! byte for byte as published, with:
//!
//! - `Content-Type: application/json`
//! - `X-Weir-Event-Id: <id>`: unique per episode and state ([`AlertEvent::id`]).
//! - `X-Weir-Signature: sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
//!
//! An attempt succeeds on a 2xx answer within the timeout (redirects are not followed). A
//! failed one is retried after an exponential backoff (1 s, doubling, at most 5 min, each
//! wait between half and all of that, at random, so that endpoints failing together are not
//! retried in step), for as long as the tenant has a webhook: an event is never dropped.
//!
//! # The at-least-once contract
//!
//! A partition's offset is committed only past events delivered or needing no delivery
//! (their tenant has no webhook), so a restart, or another member taking the partition over,
//! resumes with the first event not yet delivered. An event delivered just before a crash or
//! a rebalance, and not yet committed, is delivered again: receivers deduplicate by
//! `X-Weir-Event-Id`. One tenant's events are delivered in the order they were read, one at a
//! time (a raise before its clear); tenants do not wait for each other, up to
//! [`WebhookConfig::max_pending_per_tenant`] events waiting for one tenant, beyond which
//! reading waits for that tenant.
//!
//! On the embedded bus ([`WebhookConfig::commit_when_read`]) nothing outlives the process, so
//! events are committed as read, and an event for a tenant with that many waiting is dropped
//! and counted rather than let one dead endpoint hold the `alerts` topic, and the processor
//! behind it, still.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use weir_common::bus::{Bus, BusError, Offset, Partition, Poll, Subscription};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::alerts::{AlertEvent, Webhook};

use super::{AlertConfig, store};

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Consumer group on `alerts` (under the topics' prefix).
    pub group: String,
    pub topics: Topics,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Wait after the first failed attempt; it doubles with every further failure.
    pub backoff_initial: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// Events of one tenant waiting for delivery at most; beyond, reading waits (or, with
    /// `commit_when_read`, the event is dropped and counted).
    pub max_pending_per_tenant: usize,
    /// Commit events as they are read, not as they are delivered: for a bus that does not
    /// outlive the process (the embedded one), where undelivered events die with it anyway
    /// and an uncommitted backlog would hold the `alerts` topic full, and with it the
    /// processor that publishes there.
    pub commit_when_read: bool,
    /// Most events taken from the bus at once.
    pub max_poll_records: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            group: "weir-alert-webhooks".into(),
            topics: Topics::default(),
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_pending_per_tenant: 10_000,
            max_poll_records: 256,
            commit_when_read: false,
        }
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), WebhookError> {
        let bad = |reason: &str| Err(WebhookError::Config(reason.into()));
        if self.timeout.is_zero() {
            return bad("timeout must be more than zero");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be more than zero and at most backoff_max");
        }
        if self.max_pending_per_tenant == 0 || self.max_poll_records == 0 {
            return bad("max_pending_per_tenant and max_poll_records must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook delivery configuration: {0}")]
    Config(String),
    #[error("webhook delivery bus error: {0}")]
    Bus(#[from] BusError),
    #[error("cannot make the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What the delivery has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Events delivered (a 2xx answer).
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed_attempts: AtomicU64,
    /// Events whose tenant has no webhook.
    pub not_needed: AtomicU64,
    /// Records on the topic that are not alert events.
    pub unreadable: AtomicU64,
    /// Events dropped because their tenant's queue was full (only with `commit_when_read`).
    pub dropped: AtomicU64,
}

impl WebhookCounters {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }
}

/// The webhook deliverer, a member of its consumer group from [`WebhookDelivery::start`] on.
pub struct WebhookDelivery {
    config: WebhookConfig,
    sub: Box<dyn Subscription>,
    sender: Arc<Sender>,
}

const POLL_TIMEOUT: Duration = Duration::from_millis(200);

impl WebhookDelivery {
    /// Checks the configuration, makes the `alerts` topic if needed (as many partitions as
    /// `telemetry`) and joins the consumer group.
    pub async fn start(
        config: WebhookConfig,
        alerts: Arc<dyn AlertConfig>,
        bus: &dyn Bus,
    ) -> Result<Self, WebhookError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weir-alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;
        store::ensure_topic(bus, &config.topics).await?;
        let sub = bus
            .subscribe(&config.topics.alerts(), &config.topics.group(&config.group))
            .await?;
        let sender = Arc::new(Sender {
            client,
            alerts,
            counters: Arc::default(),
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
        });
        Ok(WebhookDelivery {
            config,
            sub,
            sender,
        })
    }

    pub fn counters(&self) -> Arc<WebhookCounters> {
        self.sender.counters.clone()
    }

    /// Delivers until `stop` fires, then commits what was delivered and returns promptly:
    /// events not delivered yet stay uncommitted, for the next run.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), WebhookError> {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut workers: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut offsets = Offsets::default();
        let result = async {
            'reading: loop {
                while let Ok((p, o)) = done_rx.try_recv() {
                    offsets.done(p, o);
                }
                self.commit(&mut offsets, None).await?;
                let poll = tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    poll = self.sub.poll(self.config.max_poll_records, POLL_TIMEOUT) => poll?,
                };
                let messages = match poll {
                    Poll::Messages(messages) => messages,
                    Poll::Revoked(partitions) => {
                        // The new owner delivers what is not committed.
                        while let Ok((p, o)) = done_rx.try_recv() {
                            offsets.done(p, o);
                        }
                        self.commit(&mut offsets, Some(&partitions)).await?;
                        offsets.revoke(&partitions);
                        continue;
                    }
                    Poll::Assigned(_) | Poll::Idle => continue,
                };
                for m in messages {
                    offsets.read(m.partition, m.offset);
                    let event = match serde_json::from_slice::<AlertEvent>(&m.value) {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::warn!(partition = m.partition, offset = m.offset, %error, "skipping an alert event that does not parse");
                            self.sender.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                            offsets.done(m.partition, m.offset);
                            continue;
                        }
                    };
                    if self.sender.alerts.webhook(&event.tenant).is_none() {
                        self.sender.counters.not_needed.fetch_add(1, Ordering::Relaxed);
                        offsets.done(m.partition, m.offset);
                        continue;
                    }
                    if self.config.commit_when_read {
                        offsets.done(m.partition, m.offset);
                    }
                    let job = Job {
                        partition: m.partition,
                        offset: m.offset,
                        id: event.id,
                        tenant: event.tenant.clone(),
                        body: m.value.to_vec(),
                        revoked: offsets.revoked_token(m.partition),
                    };
                    let worker = workers.entry(event.tenant).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(self.config.max_pending_per_tenant);
                        tasks.spawn(worker(
                            rx,
                            self.sender.clone(),
                            done_tx.clone(),
                            stop.clone(),
                        ));
                        tx
                    });
                    if self.config.commit_when_read {
                        if let Err(mpsc::error::TrySendError::Full(job)) = worker.try_send(job) {
                            tracing::warn!(tenant = %job.tenant, id = %job.id, "a tenant's webhook is this far behind: dropping an alert event");
                            self.sender.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break 'reading,
                        // A worker ends only once stopped.
                        _ = worker.send(job) => {}
                    }
                }
            }
            Ok::<(), WebhookError>(())
        }
        .await;
        // Workers end at `stop` (or when their queue closes), abandoning what they hold.
        drop(workers);
        while tasks.join_next().await.is_some() {}
        while let Ok((p, o)) = done_rx.try_recv() {
            offsets.done(p, o);
        }
        let committed = self.commit(&mut offsets, None).await;
        result?;
        committed?;
        tracing::info!(
            delivered = self.sender.counters.delivered(),
            "webhook delivery stopped"
        );
        Ok(())
    }

    async fn commit(
        &mut self,
        offsets: &mut Offsets,
        only: Option<&[Partition]>,
    ) -> Result<(), WebhookError> {
        let to_commit = offsets.due(only);
        if !to_commit.is_empty() {
            self.sub.commit(&to_commit).await?;
        }
        Ok(())
    }
}

/// One event to deliver.
struct Job {
    partition: Partition,
    offset: Offset,
    id: String,
    tenant: String,
    body: Vec<u8>,
    /// Cancelled when the partition goes to another member, which delivers it instead.
    revoked: CancellationToken,
}

/// Delivers one tenant's events, one at a time, in order.
async fn worker(
    mut jobs: mpsc::Receiver<Job>,
    sender: Arc<Sender>,
    done: mpsc::UnboundedSender<(Partition, Offset)>,
    stop: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        match sender.deliver(&job, &stop).await {
            Outcome::Delivered | Outcome::NotNeeded => {
                // The reader is gone only once stopping.
                let _ = done.send((job.partition, job.offset));
            }
            Outcome::Abandoned => {}
            Outcome::Stopped => return,
        }
    }
}

enum Outcome {
    Delivered,
    /// The tenant no longer has a webhook.
    NotNeeded,
    /// The partition went to another member.
    Abandoned,
    Stopped,
}

struct Sender {
    client: reqwest::Client,
    alerts: Arc<dyn AlertConfig>,
    counters: Arc<WebhookCounters>,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl Sender {
    async fn deliver(&self, job: &Job, stop: &CancellationToken) -> Outcome {
        let mut failures = 0u32;
        loop {
            if stop.is_cancelled() {
                return Outcome::Stopped;
            }
            if job.revoked.is_cancelled() {
                return Outcome::Abandoned;
            }
            let Some(webhook) = self.alerts.webhook(&job.tenant) else {
                self.counters.not_needed.fetch_add(1, Ordering::Relaxed);
                return Outcome::NotNeeded;
            };
            let result = tokio::select! {
                biased;
                () = stop.cancelled() => return Outcome::Stopped,
                () = job.revoked.cancelled() => return Outcome::Abandoned,
                result = self.attempt(&webhook, job) => result,
            };
            let reason = match result {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Delivered;
                }
                Err(reason) => reason,
            };
            self.counters
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
            let wait = backoff(self.backoff_initial, self.backoff_max, failures);
            failures = failures.saturating_add(1);
            tracing::warn!(
                id = %job.id,
                tenant = %job.tenant,
                attempts = failures,
                %reason,
                retry_in = ?wait,
                "alert webhook delivery failed"
            );
            tokio::select! {
                biased;
                () = stop.cancelled() => return Outcome::Stopped,
                () = job.revoked.cancelled() => return Outcome::Abandoned,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, webhook: &Webhook, job: &Job) -> Result<(), String> {
        let signature = signature(webhook.secret.as_bytes(), &job.body)
            .ok_or_else(|| "the webhook secret cannot key an HMAC".to_owned())?;
        let response = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Weir-Event-Id", &job.id)
            .header("X-Weir-Signature", signature)
            .body(job.body.clone())
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`; `None` only if the key is refused,
/// which HMAC never does.
pub fn signature(secret: &[u8], body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    Some(out)
}

/// The wait after `failures` failed attempts before the last one: `initial * 2^failures`,
/// at most `max`, of which a random half is taken off.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let base = initial
        .saturating_mul(2u32.saturating_pow(failures.min(31)))
        .min(max);
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// An error with its causes: reqwest's own message rarely says what failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Per partition, what is read and not yet done with: the offset to commit is the first
/// such, or the next to read.
#[derive(Default)]
struct Offsets {
    partitions: HashMap<Partition, PartitionOffsets>,
}

#[derive(Default)]
struct PartitionOffsets {
    pending: BTreeSet<Offset>,
    next: Offset,
    committed: Option<Offset>,
    revoked: CancellationToken,
}

impl Offsets {
    fn read(&mut self, p: Partition, offset: Offset) {
        let part = self.partitions.entry(p).or_default();
        part.pending.insert(offset);
        part.next = part.next.max(offset + 1);
    }

    fn done(&mut self, p: Partition, offset: Offset) {
        if let Some(part) = self.partitions.get_mut(&p) {
            part.pending.remove(&offset);
        }
    }

    fn revoked_token(&mut self, p: Partition) -> CancellationToken {
        self.partitions.entry(p).or_default().revoked.clone()
    }

    fn revoke(&mut self, partitions: &[Partition]) {
        for p in partitions {
            if let Some(part) = self.partitions.remove(p) {
                part.revoked.cancel();
            }
        }
    }

    /// Offsets that moved since last committed, of `only` these partitions when given.
    fn due(&mut self, only: Option<&[Partition]>) -> Vec<(Partition, Offset)> {
        let mut out = Vec::new();
        for (p, part) in &mut self.partitions {
            if only.is_some_and(|only| !only.contains(p)) {
                continue;
            }
            let at = part.pending.first().copied().unwrap_or(part.next);
            if part.committed != Some(at) {
                part.committed = Some(at);
                out.push((*p, at));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
