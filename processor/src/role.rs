//! The processor role: consume `telemetry`, keep the warm store current.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use weir_common::bus::{Bus, BusError, Offset, Partition, Poll, Subscription};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::TelemetryCodec;

use crate::store::{WarmStore, watermark_time};
use crate::window::Geometry;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Length of the rolling window.
    pub window: Duration,
    /// How far the rolling window advances at a time (the pane length).
    pub hop: Duration,
    /// How late a reading may arrive and still correct its window.
    pub allowed_lateness: Duration,
    /// Consumer group on `telemetry` (under the topics' prefix).
    pub group: String,
    pub topics: Topics,
    /// Most records taken from the bus at once.
    pub max_poll_records: usize,
    /// On shutdown, read the topic to its end before stopping. Right for the embedded bus,
    /// whose records die with the process; with Kafka another member or a restart resumes.
    pub drain_on_shutdown: bool,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            hop: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(60),
            group: "weir-processor".into(),
            topics: Topics::default(),
            max_poll_records: 2048,
            drain_on_shutdown: true,
        }
    }
}

impl ProcessorConfig {
    /// Cross-field checks, run before anything starts.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        let bad = |reason: String| Err(ProcessorError::Config(reason));
        let day = Duration::from_secs(86_400);
        if self.hop < Duration::from_millis(1) || self.window < Duration::from_millis(1) {
            return bad("window and hop must be at least 1 ms".into());
        }
        if self.window > day || self.allowed_lateness > day {
            return bad("window and allowed lateness must be at most a day".into());
        }
        if !self.window.as_micros().is_multiple_of(self.hop.as_micros()) {
            return bad(format!(
                "window ({:?}) must be a whole number of hops ({:?})",
                self.window, self.hop
            ));
        }
        if self.max_poll_records == 0 {
            return bad("max_poll_records must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("invalid processor configuration: {0}")]
    Config(String),
    #[error("processor bus error: {0}")]
    Bus(#[from] BusError),
}

/// The processor role, a member of its consumer group from [`Processor::start`] on.
pub struct Processor {
    config: ProcessorConfig,
    sub: Box<dyn Subscription>,
    store: Arc<WarmStore>,
    /// Newest event time seen per partition: what lateness is judged against.
    watermarks: HashMap<Partition, i64>,
}

/// How often panes nobody can need any more are dropped.
const EVICT_EVERY: Duration = Duration::from_secs(5);
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

impl Processor {
    /// Checks the configuration and joins the consumer group. From then on the bus keeps
    /// every record for this group: start consumers before accepting traffic.
    pub async fn start(config: ProcessorConfig, bus: Arc<dyn Bus>) -> Result<Self, ProcessorError> {
        config.validate()?;
        // Validated above: at most a day, so the microseconds fit an i64.
        let micros = |d: Duration| d.as_micros() as i64;
        let geometry = Geometry {
            window_us: micros(config.window),
            hop_us: micros(config.hop),
        };
        let store = Arc::new(WarmStore::new(geometry, micros(config.allowed_lateness)));
        let sub = bus
            .subscribe(
                &config.topics.telemetry(),
                &config.topics.group(&config.group),
            )
            .await?;
        Ok(Self {
            config,
            sub,
            store,
            watermarks: HashMap::new(),
        })
    }

    pub fn store(&self) -> Arc<WarmStore> {
        self.store.clone()
    }

    pub fn router(&self) -> Router {
        crate::api::router(self.store.clone())
    }

    /// Consumes until `shutdown` fires (then drains, if configured) or the bus fails.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ProcessorError> {
        let max = self.config.max_poll_records;
        let mut last_evict = tokio::time::Instant::now();
        loop {
            let poll = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                poll = self.sub.poll(max, POLL_TIMEOUT) => poll?,
            };
            self.handle(poll).await?;
            if last_evict.elapsed() >= EVICT_EVERY {
                self.store.evict();
                last_evict = tokio::time::Instant::now();
            }
        }
        if self.config.drain_on_shutdown {
            loop {
                let poll = self.sub.poll(max, POLL_TIMEOUT).await?;
                let idle = poll == Poll::Idle;
                self.handle(poll).await?;
                if idle && self.sub.lag().await? == 0 {
                    break;
                }
            }
        }
        tracing::info!(
            applied = self.store.applied(),
            late = self.store.late(),
            "processor stopped"
        );
        Ok(())
    }

    /// Applies a poll's records to the store and commits them.
    async fn handle(&mut self, poll: Poll) -> Result<(), ProcessorError> {
        let messages = match poll {
            Poll::Messages(messages) => messages,
            Poll::Revoked(partitions) => {
                // Another member takes these over; its view of them starts afresh.
                for p in partitions {
                    self.watermarks.remove(&p);
                }
                return Ok(());
            }
            Poll::Assigned(_) | Poll::Idle => return Ok(()),
        };
        let codec = TelemetryCodec::global();
        let mut next: Vec<(Partition, Offset)> = Vec::new();
        for message in &messages {
            match codec.decode(&message.value) {
                Ok(record) => {
                    let watermark = self.watermarks.get(&message.partition).copied();
                    self.store.apply(&record, watermark);
                    let time = watermark_time(&record);
                    let newest = watermark.map_or(time, |w| w.max(time));
                    self.watermarks.insert(message.partition, newest);
                }
                Err(error) => tracing::error!(
                    partition = message.partition,
                    offset = message.offset,
                    %error,
                    "skipping a telemetry record that does not decode"
                ),
            }
            match next.iter_mut().find(|(p, _)| *p == message.partition) {
                Some(entry) => entry.1 = message.offset + 1,
                None => next.push((message.partition, message.offset + 1)),
            }
        }
        self.sub.commit(&next).await?;
        Ok(())
    }
}
