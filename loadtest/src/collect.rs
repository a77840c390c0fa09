//! Reading a topic a run publishes to (windows, alerts) from before the run starts to its end,
//! under a group of its own, folding each record into a state as it comes.
//!
//! It joins before the run because the embedded bus keeps a record only while some group still
//! has to read it: a reader that joined afterwards would find what the live views already
//! consumed gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_common::bus::{Bus, BusError, Message, Offset, Partition, Poll, Subscription};
use weir_common::shutdown::CancellationToken;

/// How long the reader may take, once asked to finish, to own its partitions and read them to
/// their end. A bus that cannot be read in that time (a broker that stopped answering, a
/// group that never gets its partitions back) is an error, never a wait without end.
const FINISH_PATIENCE: Duration = Duration::from_secs(120);

pub struct Collector<S> {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<S, BusError>>,
}

impl<S: Send + 'static> Collector<S> {
    /// Joins a group of its own on `topic`, reads it from the start and folds every record
    /// into `state`.
    pub async fn start(
        bus: Arc<dyn Bus>,
        topic: &str,
        state: S,
        fold: impl FnMut(&mut S, &Message) + Send + 'static,
    ) -> Result<Collector<S>, BusError> {
        let group = weir_common::bus::conformance::unique("weir-reconcile");
        let sub = bus.subscribe(topic, &group).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(collect(sub, stop.clone(), state, fold));
        Ok(Collector { stop, task })
    }

    /// Reads on to the end of the topic, then returns the state.
    pub async fn finish(self) -> Result<S, BusError> {
        self.stop.cancel();
        self.task
            .await
            .map_err(|e| BusError::Backend(format!("the topic reader failed: {e}")))?
    }
}

async fn collect<S>(
    mut sub: Box<dyn Subscription>,
    stop: CancellationToken,
    mut state: S,
    mut fold: impl FnMut(&mut S, &Message),
) -> Result<S, BusError> {
    let mut quiet = 0;
    let mut last_error: Option<BusError> = None;
    let mut finishing_since: Option<tokio::time::Instant> = None;
    // Done once asked to finish, owning partitions, read to the end, and quiet a while.
    while quiet < 3 {
        if stop.is_cancelled() {
            let since = *finishing_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > FINISH_PATIENCE {
                let why = match (&last_error, sub.assignment().is_empty()) {
                    (Some(error), _) => format!("the bus last said: {error}"),
                    (None, true) => "the reader was never given the topic's partitions".into(),
                    (None, false) => "new records kept arriving".into(),
                };
                return Err(BusError::Backend(format!(
                    "the topic could not be read to its end within {} s of the run's end; {why}",
                    FINISH_PATIENCE.as_secs()
                )));
            }
        }
        match sub.poll(10_000, Duration::from_millis(300)).await? {
            Poll::Messages(messages) => {
                quiet = 0;
                let mut read_to: BTreeMap<Partition, Offset> = BTreeMap::new();
                for m in &messages {
                    read_to.insert(m.partition, m.offset + 1);
                    fold(&mut state, m);
                }
                // Kept here: the embedded bus may let go of them, and its producers need not
                // wait for this reader.
                let read_to: Vec<_> = read_to.into_iter().collect();
                sub.commit(&read_to).await?;
            }
            Poll::Idle if stop.is_cancelled() && !sub.assignment().is_empty() => {
                match sub.lag().await {
                    Ok(0) => quiet += 1,
                    Ok(_) => {}
                    // A broker slow to answer (just after a heavy run) is asked again, until
                    // the patience above runs out.
                    Err(error) => {
                        tracing::warn!(%error, "cannot read how far behind the topic reader is");
                        last_error = Some(error);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(state)
}
