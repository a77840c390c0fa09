//! Where registry changes are kept: an ordered log of puts and deletes, keyed by entity, that
//! a registry replays on start. Compacted by key, it is the registry's whole state.
//!
//! - [`FileLog`]: a JSON-lines file under the data directory (embedded mode), one line per
//!   batch of changes so that a batch is all or nothing, made durable by `fsync` before it is
//!   acknowledged, readable by its owner only (it holds device keys), and compacted when it is
//!   opened.
//! - [`BusLog`]: a compacted topic (Kafka mode), shared by every gateway.
//! - [`MemoryLog`]: nothing kept (tests, throwaway runs).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_common::bus::{Bus, Message, Poll, Record, Subscription};

use super::RegistryError;
use weir_schemas::alerts::AlertRule;

use super::model::{Building, Device, Tenant};

/// One registry entity, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    Tenant(Tenant),
    Building(Building),
    Device(Device),
    AlertRule(AlertRule),
}

impl Entity {
    /// The log key: later changes to the same key replace earlier ones.
    pub fn key(&self) -> String {
        match self {
            Entity::Tenant(t) => tenant_key(&t.id),
            Entity::Building(b) => building_key(&b.tenant, &b.id),
            Entity::Device(d) => device_key(&d.id),
            Entity::AlertRule(r) => alert_rule_key(&r.tenant, &r.id),
        }
    }
}

pub fn alert_rule_key(tenant: &str, id: &str) -> String {
    format!("alert-rule/{tenant}/{id}")
}

pub fn tenant_key(id: &str) -> String {
    format!("tenant/{id}")
}

pub fn building_key(tenant: &str, id: &str) -> String {
    format!("building/{tenant}/{id}")
}

pub fn device_key(id: &str) -> String {
    format!("device/{id}")
}

/// A put (`value` present) or a delete (`value` absent) of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    #[serde(default)]
    pub value: Option<Entity>,
}

impl Change {
    pub fn put(entity: Entity) -> Self {
        Self {
            key: entity.key(),
            value: Some(entity),
        }
    }

    pub fn delete(key: String) -> Self {
        Self { key, value: None }
    }
}

/// Durable, ordered storage of registry changes.
#[async_trait]
pub trait RegistryLog: Send + Sync {
    /// Appends `changes` in order; returns once they are durable. `None`: the caller applies
    /// them now. `Some(offset)`: they come back through the log's follower, which must have
    /// applied everything through `offset` before they are visible.
    async fn append(&self, changes: Vec<Change>) -> Result<Option<u64>, RegistryError>;
}

/// Keeps nothing.
pub struct MemoryLog;

#[async_trait]
impl RegistryLog for MemoryLog {
    async fn append(&self, _changes: Vec<Change>) -> Result<Option<u64>, RegistryError> {
        Ok(None)
    }
}

/// A JSON-lines file of changes.
pub struct FileLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl FileLog {
    /// Opens (or creates) the log at `path` and returns it with the live changes it holds, one
    /// per key, in log order. A log with many superseded lines is rewritten without them.
    pub fn open(path: impl Into<PathBuf>) -> Result<(FileLog, Vec<Change>), RegistryError> {
        let path = path.into();
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        let replayed = match std::fs::File::open(&path) {
            Ok(file) => read_live(&path, file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Replayed {
                live: Vec::new(),
                changes: 0,
                torn: false,
            },
            Err(e) => return Err(io(e)),
        };
        let live = replayed.live;
        if replayed.torn || replayed.changes > 2 * live.len() + 1000 {
            rewrite(&path, &live)?;
        }
        let file = private_file(&path, false).map_err(io)?;
        Ok((
            FileLog {
                path,
                file: Arc::new(Mutex::new(file)),
            },
            live,
        ))
    }
}

/// What [`read_live`] found.
struct Replayed {
    live: Vec<Change>,
    /// Changes read, superseded ones included.
    changes: usize,
    /// The last line was cut short by a crash (never acknowledged): the file must be
    /// rewritten before anything is appended after it.
    torn: bool,
}

/// Reads every batch, keeping the last change of each key (deletes drop the key).
fn read_live(path: &Path, file: std::fs::File) -> Result<Replayed, RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = std::io::BufReader::new(file);
    let mut latest: HashMap<String, (usize, Change)> = HashMap::new();
    let mut line = Vec::new();
    let mut order = 0;
    let mut torn = false;
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let complete = line.ends_with(b"\n");
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let batch: Vec<Change> = match serde_json::from_slice(&line) {
            Ok(batch) => batch,
            // A crash can leave the last batch half-written; it was never acknowledged.
            Err(_) if !complete => {
                torn = true;
                break;
            }
            Err(source) => {
                return Err(RegistryError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    source,
                });
            }
        };
        for change in batch {
            order += 1;
            if change.value.is_some() {
                latest.insert(change.key.clone(), (order, change));
            } else {
                latest.remove(&change.key);
            }
        }
        torn = !complete;
    }
    let mut live: Vec<(usize, Change)> = latest.into_values().collect();
    live.sort_by_key(|(order, _)| *order);
    Ok(Replayed {
        live: live.into_iter().map(|(_, c)| c).collect(),
        changes: order,
        torn,
    })
}

/// Replaces the file by one holding only `live`: written aside, synced, renamed.
fn rewrite(path: &Path, live: &[Change]) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = std::io::BufWriter::new(private_file(&tmp, true).map_err(io)?);
        for batch in live.chunks(10_000) {
            serde_json::to_writer(&mut out, batch).map_err(|e| io(std::io::Error::other(e)))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)
}

/// Opens a file only its owner may read: it holds device keys. `truncate` for a new file,
/// else appends.
fn private_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[async_trait]
impl RegistryLog for FileLog {
    async fn append(&self, changes: Vec<Change>) -> Result<Option<u64>, RegistryError> {
        let file = self.file.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let io = |source| RegistryError::Io {
                path: path.clone(),
                source,
            };
            // The whole batch on one line: replay takes it whole or (torn) not at all.
            let mut bytes =
                serde_json::to_vec(&changes).map_err(|e| io(std::io::Error::other(e)))?;
            bytes.push(b'\n');
            let mut file = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = file.metadata().map_err(io)?.len();
            let written = file.write_all(&bytes).and_then(|()| file.sync_data());
            if let Err(error) = written {
                // Take back whatever part was written, so the next batch starts on a line of
                // its own and a failed batch never comes back on replay.
                if let Err(undo) = file.set_len(before).and_then(|()| file.sync_data()) {
                    tracing::error!(%undo, "cannot take back a failed registry write");
                }
                return Err(io(error));
            }
            Ok(None)
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?
    }
}

/// Registry changes on a compacted topic of the bus (Kafka mode): every gateway replays it on
/// start and follows it, so a change made through any gateway reaches all of them.
///
/// A change is not applied by the writer when produced: it comes back to every registry,
/// the writer's included, through [`follow`], in the topic's one order. The writer waits until
/// its own registry has applied it, so the admin API still reads its own writes.
pub struct BusLog {
    bus: Arc<dyn Bus>,
    topic: String,
}

/// The registry topic has one partition: one order of all changes.
pub const REGISTRY_PARTITIONS: u32 = 1;

impl BusLog {
    pub fn new(bus: Arc<dyn Bus>, topic: String) -> Self {
        Self { bus, topic }
    }
}

#[async_trait]
impl RegistryLog for BusLog {
    async fn append(&self, changes: Vec<Change>) -> Result<Option<u64>, RegistryError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let records = changes
            .iter()
            .map(|change| {
                Ok(Record {
                    key: change.key.clone().into_bytes().into(),
                    value: serde_json::to_vec(change)
                        .map_err(|e| RegistryError::Internal(e.to_string()))?
                        .into(),
                    timestamp_ms: now,
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let positions = self
            .bus
            .produce(&self.topic, records)
            .await
            .map_err(|e| RegistryError::Internal(format!("cannot log the change: {e}")))?;
        Ok(positions.iter().map(|p| p.offset).max())
    }
}

/// Joins the registry topic under a group of its own and reads it from the start.
pub async fn subscribe(
    bus: &dyn Bus,
    topic: &str,
    group: &str,
) -> Result<Box<dyn Subscription>, RegistryError> {
    bus.subscribe(topic, group)
        .await
        .map_err(|e| RegistryError::Internal(format!("cannot read the registry topic: {e}")))
}

/// Applies what the registry topic holds now, then returns: call before serving, so that a
/// gateway starts knowing every device. Then hand the subscription to [`follow`].
pub async fn catch_up(
    registry: &super::Registry,
    subscription: &mut dyn Subscription,
) -> Result<usize, RegistryError> {
    let internal = |e: weir_common::bus::BusError| {
        RegistryError::Internal(format!("cannot read the registry topic: {e}"))
    };
    let mut applied = 0;
    loop {
        match subscription
            .poll(10_000, std::time::Duration::from_millis(100))
            .await
            .map_err(internal)?
        {
            Poll::Messages(messages) => applied += apply_messages(registry, messages),
            Poll::Idle
                if !subscription.assignment().is_empty()
                    && subscription.lag().await.map_err(internal)? == 0 =>
            {
                return Ok(applied);
            }
            _ => {}
        }
    }
}

/// Applies changes as they come, until `stop`.
pub async fn follow(
    registry: Arc<super::Registry>,
    mut subscription: Box<dyn Subscription>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), RegistryError> {
    loop {
        let poll = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            poll = subscription.poll(10_000, std::time::Duration::from_millis(200)) => poll,
        };
        match poll {
            Ok(Poll::Messages(messages)) => {
                apply_messages(&registry, messages);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the registry topic; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn apply_messages(registry: &super::Registry, messages: Vec<Message>) -> usize {
    let mut applied = 0;
    for message in messages {
        match serde_json::from_slice::<Change>(&message.value) {
            Ok(change) => {
                registry.apply(change);
                applied += 1;
            }
            Err(error) => tracing::error!(
                offset = message.offset,
                %error,
                "a registry change does not parse; skipped"
            ),
        }
        registry.applied_through(message.offset);
    }
    applied
}
