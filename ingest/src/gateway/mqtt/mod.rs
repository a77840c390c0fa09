//! The MQTT endpoint of the gateway: MQTT 3.1.1 and 5 over TCP or TLS, on its own listener.
//!
//! A device connects with its id as client id and its credential as password: a SAS token
//! (as Azure IoT Hub devices do, with username `{host}/{id}/?api-version=...`) or one of its
//! keys (base64). It publishes on the topics of [`topics`]. Each message takes the gateway's
//! one path to the bus; a QoS 1 message is acknowledged (PUBACK) only once the bus
//! acknowledged its records, and acknowledgements go out in the order the messages came, as
//! MQTT requires. QoS 2 is taken as well (PUBREC once on the bus, then PUBREL/PUBCOMP).
//!
//! Bounds: the packet size ([`MqttConfig::max_packet_bytes`], refused from the fixed header),
//! the messages in flight per connection ([`MqttConfig::receive_max`]: past it, the
//! connection is not read until one completes, so a fast device is slowed rather than
//! buffered), the keep-alive (1.5 times the client's), the time to send CONNECT, and the
//! listener's connection limits.
//!
//! What a device is told when a message fails: MQTT 5 carries a reason code and text in the
//! PUBACK. MQTT 3.1.1 has no room for it: a message that does not decode is acknowledged once
//! it is kept in the dead letters (sending it again cannot help), and one that could not be
//! stored for now (bus unavailable) is not acknowledged: the connection is closed, so that the
//! device sends it again when it reconnects.
//!
//! One connection per device: a second CONNECT with the same client id takes the session over
//! and closes the first. Sessions that are not clean keep their subscriptions for
//! [`MqttConfig::session_expiry`] after the connection ends. A connection is closed when its
//! device is disabled, revoked or deleted, when its credential stops being valid (a rotated
//! key, an expired SAS token), or when the gateway stops.

pub mod codec;
mod connection;
pub mod topics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use weir_common::listener::Listener;

pub use codec::Version;

use super::Gateway;

/// Limits and timeouts of the MQTT endpoint.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Largest packet a device may send, in bytes.
    pub max_packet_bytes: usize,
    /// Messages a connection may have in flight (on their way to the bus) at once.
    pub receive_max: u16,
    /// How long a device has to send CONNECT once connected.
    pub connect_timeout: Duration,
    /// How long a persistent session is kept after its connection ends.
    pub session_expiry: Duration,
    /// Keep-alive imposed on clients that ask for none (0), or for more.
    pub max_keep_alive: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_bytes: 256 * 1024,
            receive_max: 64,
            connect_timeout: Duration::from_secs(10),
            session_expiry: Duration::from_secs(3600),
            max_keep_alive: Duration::from_secs(1200),
        }
    }
}

/// How long stopping waits for connections to settle what they have in flight.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What outlives a connection of a persistent session.
#[derive(Debug, Clone, Default)]
struct Session {
    subscriptions: Vec<(Arc<str>, u8)>,
    /// When it is dropped, if no connection takes it up before.
    expires: Option<tokio::time::Instant>,
}

/// A connection in progress, as the server knows it.
struct Live {
    id: u64,
    /// Closes the connection, with why.
    close: CancellationToken,
    reason: Arc<std::sync::Mutex<Option<connection::CloseReason>>>,
    credential: connection::Credential,
    /// Wakes the connection when its device changed, to send desired properties it has not
    /// told the device yet.
    changed: Arc<tokio::sync::Notify>,
}

/// The state all connections share.
pub(crate) struct Shared {
    gateway: Gateway,
    config: MqttConfig,
    live: DashMap<Arc<str>, Live>,
    sessions: DashMap<Arc<str>, Session>,
    next_id: AtomicU64,
}

impl Shared {
    /// Closes the live connection of `device`, if any, for `reason`.
    fn close(&self, device: &str, reason: connection::CloseReason) {
        if let Some(live) = self.live.get(device) {
            *live.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
            live.close.cancel();
        }
    }

    fn live_devices(&self) -> Vec<Arc<str>> {
        self.live.iter().map(|e| e.key().clone()).collect()
    }
}

/// Serves MQTT on `listener` until `stop` is cancelled; then closes every connection.
pub async fn serve(
    mut listener: Listener,
    gateway: Gateway,
    config: MqttConfig,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        gateway,
        config,
        live: DashMap::new(),
        sessions: DashMap::new(),
        next_id: AtomicU64::new(1),
    });
    let watcher = tokio::spawn(watch_registry(shared.clone(), stop.clone()));
    let mut connections = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                shared.sessions.retain(|_, s| s.expires.is_none_or(|e| e > now));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (stream, peer) = axum::serve::Listener::accept(&mut listener) => {
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let (shared, stop) = (shared.clone(), stop.clone());
                connections.spawn(async move {
                    connection::run(stream, peer, id, shared, stop).await;
                });
            }
        }
    }
    // Each connection sees `stop` too: it settles the messages it has in flight (so that an
    // acknowledged message is on the bus before the bus stops), says goodbye, and ends.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "MQTT connections did not settle in time; closing them"
        );
        connections.abort_all();
    }
    watcher.abort();
}

/// Closes connections whose devices change so that they may no longer send (each is checked
/// again against the registry with the credential it connected with), and wakes the others,
/// which may have desired properties to deliver.
async fn watch_registry(shared: Arc<Shared>, stop: CancellationToken) {
    let mut changes = shared.gateway.registry().watch_devices();
    loop {
        let changed = tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.recv() => changed,
        };
        match changed {
            Ok(device) => connection::recheck(&shared, &device),
            // Fell behind (a bulk import): look at every live connection.
            Err(RecvError::Lagged(_)) => {
                for device in shared.live_devices() {
                    connection::recheck(&shared, &device);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests;
