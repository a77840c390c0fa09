//! One MQTT connection, from CONNECT to close.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_common::listener::Connection;
use weir_schemas::protocol;

use super::codec::{
    self, ConnackCode, Connect, DisconnectReason, FrameError, Inbound, Outbound, Outcome, Version,
};
use super::topics::{self, Route};
use super::{Live, Session, Shared};
use crate::formats::iothub::{self, Message};
use crate::formats::senml;
use crate::gateway::auth::Authenticator;
use crate::gateway::{Gateway, IngestError, now_micros, now_secs};
use crate::registry::twin::{self, Properties, Side};
use crate::registry::{Device, RegistryError};

/// Why the server closes a connection.
#[derive(Debug, Clone)]
pub(crate) enum CloseReason {
    TakenOver,
    NotAllowed(String),
}

/// What the device connected with, kept to check again when its device changes.
#[derive(Clone)]
pub(crate) enum Credential {
    Token(String),
    Key(String),
}

impl Credential {
    fn verify(&self, auth: &Authenticator, device: &str) -> Result<Arc<Device>, IngestError> {
        match self {
            Credential::Token(token) => {
                let verified = auth.token(token, now_secs())?;
                if &*verified.id != device {
                    return Err(IngestError::PathMismatch {
                        path: device.to_owned(),
                        authenticated: verified.id.clone(),
                    });
                }
                Ok(verified)
            }
            Credential::Key(key) => auth.key(device, key),
        }
    }
}

/// Checks `device`'s live connection against the registry again; closes it if its
/// credential no longer admits it.
pub(super) fn recheck(shared: &Shared, device: &str) {
    let credential = match shared.live.get(device) {
        Some(live) => live.credential.clone(),
        None => return,
    };
    if let Err(e) = credential.verify(shared.gateway.auth(), device) {
        tracing::info!(device, reason = %e, "closing an MQTT connection");
        shared.close(device, CloseReason::NotAllowed(e.to_string()));
    } else if let Some(live) = shared.live.get(device) {
        live.changed.notify_one();
    }
}

type Reader = ReadHalf<Connection>;
type Writer = WriteHalf<Connection>;

pub(super) async fn run(
    stream: Connection,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let config = &shared.config;
    let connect = tokio::time::timeout(
        config.connect_timeout,
        read_connect(&mut reader, &mut buf, config.max_packet_bytes),
    )
    .await;
    let connect = match connect {
        Ok(Ok(connect)) => connect,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "MQTT connection refused before CONNECT");
            return;
        }
        Err(_) => return,
    };
    let version = connect.version;
    let (device, credential) = match authenticate(&shared.gateway, &connect) {
        Ok(admitted) => admitted,
        Err((code, reason)) => {
            tracing::debug!(%peer, client = %connect.client_id, reason, "MQTT CONNECT refused");
            let _ = send(
                &mut writer,
                version,
                connack(&shared, false, code, Some(reason)),
            )
            .await;
            return;
        }
    };
    let device_id: Arc<str> = Arc::from(device.id.as_str());
    let close = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    let changed = Arc::new(tokio::sync::Notify::new());
    let live = Live {
        id,
        close: close.clone(),
        reason: reason.clone(),
        credential,
        changed: changed.clone(),
    };
    if let Some(previous) = shared.live.insert(device_id.clone(), live) {
        *previous.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(CloseReason::TakenOver);
        previous.close.cancel();
    }
    let (session_present, subscriptions) = if connect.clean {
        shared.sessions.remove(&device_id);
        (false, Vec::new())
    } else {
        match shared.sessions.remove(&device_id) {
            Some((_, session)) => (true, session.subscriptions),
            None => (false, Vec::new()),
        }
    };
    let token_deadline = match &connect.password {
        Some(p) => std::str::from_utf8(p)
            .ok()
            .and_then(Authenticator::token_valid_until),
        None => None,
    };
    let mut session = SessionState {
        version,
        desired_sent: device.twin.desired.clone(),
        device,
        gateway: shared.gateway.clone(),
        subscriptions,
        qos2: HashSet::new(),
        awaiting_rel: HashSet::new(),
        in_flight: FuturesOrdered::new(),
    };
    let accepted = connack(&shared, session_present, ConnackCode::Accepted, None);
    if send(&mut writer, version, accepted).await.is_ok() {
        let keep_alive = keep_alive(&connect, shared.config.max_keep_alive);
        let ended = session
            .serve(
                &mut reader,
                &mut writer,
                &mut buf,
                Limits {
                    keep_alive,
                    token_deadline,
                    max_packet_bytes: shared.config.max_packet_bytes,
                    receive_max: usize::from(shared.config.receive_max),
                },
                Wake {
                    close: &close,
                    stop: &stop,
                    changed: &changed,
                },
            )
            .await;
        let why = reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (disconnect, text) = match (ended, why) {
            (_, Some(CloseReason::TakenOver)) => (
                Some(DisconnectReason::SessionTakenOver),
                "another connection took the session over".to_owned(),
            ),
            (_, Some(CloseReason::NotAllowed(why))) => (Some(DisconnectReason::NotAuthorized), why),
            (Ended::Stopped, _) => (
                Some(DisconnectReason::ServerShuttingDown),
                "the gateway is stopping".to_owned(),
            ),
            (Ended::Server(reason, text), None) => (Some(reason), text),
            (Ended::Client, None) => (None, String::new()),
        };
        if let Some(reason) = disconnect {
            let _ = send(&mut writer, version, Outbound::Disconnect(reason, text)).await;
        }
        let _ = writer.shutdown().await;
    }
    shared.live.remove_if(&device_id, |_, live| live.id == id);
    if !connect.clean {
        let keep = connect
            .session_expiry_secs
            .map_or(shared.config.session_expiry, |s| {
                Duration::from_secs(u64::from(s)).min(shared.config.session_expiry)
            });
        if !keep.is_zero() {
            shared.sessions.insert(
                device_id,
                Session {
                    subscriptions: session.subscriptions,
                    expires: Some(Instant::now() + keep),
                },
            );
        }
    }
}

fn connack(
    shared: &Shared,
    session_present: bool,
    code: ConnackCode,
    reason: Option<String>,
) -> Outbound {
    Outbound::Connack {
        session_present,
        code,
        receive_max: shared.config.receive_max,
        max_packet_bytes: u32::try_from(shared.config.max_packet_bytes).unwrap_or(u32::MAX),
        reason,
    }
}

/// How long the connection may go without a packet: 1.5 times the client's keep-alive, as
/// MQTT says, within the server's maximum.
fn keep_alive(connect: &Connect, max: Duration) -> Duration {
    let asked = Duration::from_secs(u64::from(connect.keep_alive_secs));
    let keep = if asked.is_zero() { max } else { asked.min(max) };
    keep.mul_f32(1.5)
}

async fn read_connect(
    reader: &mut Reader,
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Connect, ConnectionError> {
    loop {
        if let Some(n) = codec::frame(buf, max_bytes)? {
            let packet = buf.split_to(n);
            let version = codec::connect_version(&packet)?;
            return match codec::decode(version, &packet)? {
                Inbound::Connect(connect) => Ok(connect),
                _ => Err(FrameError::NotConnect.into()),
            };
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(ConnectionError::Closed);
        }
    }
}

/// Who the CONNECT says it is, checked; or the CONNACK code that refuses it and why.
fn authenticate(
    gateway: &Gateway,
    connect: &Connect,
) -> Result<(Arc<Device>, Credential), (ConnackCode, String)> {
    let client_id = &*connect.client_id;
    if client_id.is_empty() {
        return Err((
            ConnackCode::ClientIdRejected,
            "the client id must be the device id".into(),
        ));
    }
    let password = connect
        .password
        .as_ref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or((
            ConnackCode::BadCredentials,
            "the password must be the device's SAS token or key".to_owned(),
        ))?;
    let credential = if password.starts_with("SharedAccessSignature ") {
        Credential::Token(password.to_owned())
    } else {
        Credential::Key(password.to_owned())
    };
    let device = credential
        .verify(gateway.auth(), client_id)
        .map_err(|e| match e {
            IngestError::DeviceNotEnabled { .. } => (ConnackCode::NotAuthorized, e.to_string()),
            other => (ConnackCode::BadCredentials, other.to_string()),
        })?;
    Ok((device, credential))
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the client closed the connection")]
    Closed,
}

/// How a session's loop ended.
enum Ended {
    /// The client disconnected or the connection failed.
    Client,
    /// The server ends it, with the reason MQTT 5 tells the client.
    Server(DisconnectReason, String),
    /// The gateway is stopping.
    Stopped,
}

/// What can wake a connection besides its device.
struct Wake<'a> {
    /// The server closes this connection.
    close: &'a CancellationToken,
    /// The gateway stops.
    stop: &'a CancellationToken,
    /// The device changed in the registry.
    changed: &'a tokio::sync::Notify,
}

struct Limits {
    keep_alive: Duration,
    token_deadline: Option<u64>,
    max_packet_bytes: usize,
    receive_max: usize,
}

/// A message on its way to the bus.
struct Done {
    pid: Option<u16>,
    qos: u8,
    result: Result<usize, IngestError>,
}

struct SessionState {
    version: Version,
    device: Arc<Device>,
    /// The desired properties as this connection has told them to the device.
    desired_sent: Properties,
    gateway: Gateway,
    subscriptions: Vec<(Arc<str>, u8)>,
    /// QoS 2 packet ids in flight or awaiting PUBREL: a resent PUBLISH of one is not taken
    /// again.
    qos2: HashSet<u16>,
    awaiting_rel: HashSet<u16>,
    in_flight: FuturesOrdered<BoxFuture<'static, Done>>,
}

impl SessionState {
    async fn serve(
        &mut self,
        reader: &mut Reader,
        writer: &mut Writer,
        buf: &mut BytesMut,
        limits: Limits,
        wake: Wake<'_>,
    ) -> Ended {
        let Wake {
            close,
            stop,
            changed,
        } = wake;
        let mut alive_until = Instant::now() + limits.keep_alive;
        let token_expiry = limits.token_deadline.map(|secs| {
            let left = secs.saturating_sub(now_secs());
            Instant::now() + Duration::from_secs(left)
        });
        loop {
            let room = self.in_flight.len() < limits.receive_max;
            tokio::select! {
                () = close.cancelled() => return Ended::Client,
                () = stop.cancelled() => {
                    // Finish what is in flight, so that acknowledged means stored.
                    while let Some(done) = self.in_flight.next().await {
                        if self.acknowledge(writer, done).await.is_err() {
                            break;
                        }
                    }
                    return Ended::Stopped;
                }
                () = tokio::time::sleep_until(alive_until) => {
                    return Ended::Server(
                        DisconnectReason::KeepAliveTimeout,
                        "no packet within 1.5 times the keep-alive".into(),
                    );
                }
                () = sleep_until_opt(token_expiry) => {
                    return Ended::Server(
                        DisconnectReason::NotAuthorized,
                        "the SAS token has expired; connect again with a new one".into(),
                    );
                }
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Err(ended) = self.acknowledge(writer, done).await {
                        return ended;
                    }
                }
                () = changed.notified() => {
                    if let Err(ended) = self.deliver_desired(writer).await {
                        return ended;
                    }
                }
                read = reader.read_buf(buf), if room => {
                    match read {
                        Ok(0) | Err(_) => return Ended::Client,
                        Ok(_) => {}
                    }
                    alive_until = Instant::now() + limits.keep_alive;
                    loop {
                        let n = match codec::frame(buf, limits.max_packet_bytes) {
                            Ok(Some(n)) => n,
                            Ok(None) => break,
                            Err(e) => return frame_error(e),
                        };
                        let packet = buf.split_to(n);
                        let inbound = match codec::decode(self.version, &packet) {
                            Ok(inbound) => inbound,
                            Err(e) => return frame_error(e),
                        };
                        if let Err(ended) = self.handle(writer, inbound).await {
                            return ended;
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, writer: &mut Writer, inbound: Inbound) -> Result<(), Ended> {
        let version = self.version;
        match inbound {
            Inbound::Publish(publish) => return self.publish(writer, publish).await,
            Inbound::Pubrel(pid) => {
                self.awaiting_rel.remove(&pid);
                self.qos2.remove(&pid);
                send_or_end(writer, version, Outbound::Pubcomp(pid)).await?;
            }
            Inbound::Subscribe { pid, filters } => {
                let granted = filters
                    .iter()
                    .map(|(filter, qos)| {
                        topics::may_subscribe(&self.device.id, filter).then_some((*qos).min(1))
                    })
                    .collect();
                for (filter, qos) in filters {
                    if topics::may_subscribe(&self.device.id, &filter) {
                        self.subscriptions.retain(|(f, _)| *f != filter);
                        self.subscriptions.push((filter, qos.min(1)));
                    }
                }
                send_or_end(writer, version, Outbound::Suback(pid, granted)).await?;
            }
            Inbound::Unsubscribe { pid, filters } => {
                self.subscriptions.retain(|(f, _)| !filters.contains(f));
                send_or_end(writer, version, Outbound::Unsuback(pid, filters.len())).await?;
            }
            Inbound::Pingreq => send_or_end(writer, version, Outbound::Pingresp).await?,
            Inbound::Puback => {}
            Inbound::Disconnect => return Err(Ended::Client),
            Inbound::Connect(_) => {
                return Err(Ended::Server(
                    DisconnectReason::ProtocolError,
                    "a second CONNECT on one connection".into(),
                ));
            }
            Inbound::Unexpected(what) => {
                return Err(Ended::Server(
                    DisconnectReason::ProtocolError,
                    format!("a client does not send {what}"),
                ));
            }
        }
        Ok(())
    }

    async fn publish(&mut self, writer: &mut Writer, publish: codec::Publish) -> Result<(), Ended> {
        let (pid, qos) = (publish.pid, publish.qos);
        if qos == 2
            && let Some(pid) = pid
        {
            if self.awaiting_rel.contains(&pid) {
                // Stored already; the device missed the PUBREC.
                return send_or_end(
                    writer,
                    self.version,
                    Outbound::Pubrec(pid, Outcome::Success),
                )
                .await;
            }
            if !self.qos2.insert(pid) {
                // Still on its way to the bus: its PUBREC follows.
                return Ok(());
            }
        }
        match topics::route(&publish.topic) {
            Some(Route::TwinGet { rid }) => {
                let device = self.current_device();
                let twin = serde_json::json!({
                    "desired": device.twin.desired.to_iothub(),
                    "reported": device.twin.reported.to_iothub(),
                });
                // The device now knows the whole desired document.
                self.desired_sent = device.twin.desired.clone();
                let topic = format!("$iothub/twin/res/200/?$rid={rid}");
                self.settle_inline(writer, pid, qos).await?;
                return send_or_end(
                    writer,
                    self.version,
                    Outbound::Publish {
                        topic,
                        payload: Bytes::from(twin.to_string()),
                    },
                )
                .await;
            }
            Some(Route::TwinReported { rid }) => {
                let (status, answer, version) =
                    report(&self.gateway, &self.device, &publish.payload).await;
                let topic = match version {
                    Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
                    None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
                };
                self.settle_inline(writer, pid, qos).await?;
                return send_or_end(
                    writer,
                    self.version,
                    Outbound::Publish {
                        topic,
                        payload: Bytes::from(answer),
                    },
                )
                .await;
            }
            _ => {}
        }
        let (gateway, device) = (self.gateway.clone(), self.device.clone());
        self.in_flight.push_back(Box::pin(async move {
            let result = ingest(&gateway, &device, &publish).await;
            Done { pid, qos, result }
        }));
        Ok(())
    }

    /// The device as the registry has it now.
    fn current_device(&self) -> Arc<Device> {
        self.gateway
            .registry()
            .get(&self.device.id)
            .unwrap_or_else(|| self.device.clone())
    }

    /// Sends the device what changed in its desired properties since it was last told, if it
    /// listens for them (IoT Hub's desired-properties PATCH).
    async fn deliver_desired(&mut self, writer: &mut Writer) -> Result<(), Ended> {
        let device = self.current_device();
        let desired = &device.twin.desired;
        let listens = self
            .subscriptions
            .iter()
            .any(|(filter, _)| &**filter == topics::DESIRED_PATCHES);
        if desired.version() <= self.desired_sent.version() || !listens {
            return Ok(());
        }
        let mut patch = twin::diff(&self.desired_sent.properties, &desired.properties);
        patch.insert("$version".into(), desired.version().into());
        self.desired_sent = desired.clone();
        let topic = format!(
            "$iothub/twin/PATCH/properties/desired/?$version={}",
            desired.version()
        );
        let payload = Bytes::from(serde_json::Value::Object(patch).to_string());
        send_or_end(writer, self.version, Outbound::Publish { topic, payload }).await
    }

    /// Acknowledges a message handled on the spot.
    async fn settle_inline(
        &mut self,
        writer: &mut Writer,
        pid: Option<u16>,
        qos: u8,
    ) -> Result<(), Ended> {
        self.acknowledge(
            writer,
            Done {
                pid,
                qos,
                result: Ok(0),
            },
        )
        .await
    }

    /// Tells the device how its message ended, in the order messages came.
    async fn acknowledge(&mut self, writer: &mut Writer, done: Done) -> Result<(), Ended> {
        let outcome = match &done.result {
            Ok(_) => Outcome::Success,
            Err(e) => {
                let outcome = outcome_of(e);
                tracing::debug!(device = %self.device.id, error = %e, "an MQTT message was refused");
                if self.version == Version::V3 && !e.is_undecodable() {
                    // 3.1.1 cannot say why; not acknowledging, and closing, makes the device
                    // send it again on its next connection.
                    return Err(Ended::Server(DisconnectReason::ServerBusy, e.to_string()));
                }
                outcome
            }
        };
        let Some(pid) = done.pid else {
            return Ok(());
        };
        match done.qos {
            1 => send_or_end(writer, self.version, Outbound::Puback(pid, outcome)).await,
            2 => {
                if outcome == Outcome::Success {
                    self.awaiting_rel.insert(pid);
                } else {
                    self.qos2.remove(&pid);
                }
                send_or_end(writer, self.version, Outbound::Pubrec(pid, outcome)).await
            }
            _ => Ok(()),
        }
    }
}

/// Stores a reported-properties patch: IoT Hub's status, body and new version.
async fn report(gateway: &Gateway, device: &Device, payload: &[u8]) -> (u16, String, Option<u64>) {
    let refused = |status: u16, message: String| {
        let body = serde_json::json!({ "message": message }).to_string();
        (status, body, None)
    };
    // Every report is a durable registry change: it counts against the device's request rate,
    // and a device over it is told to wait (IoT Hub answers twin operations 429 too).
    if let Err(e) = gateway.limits().device_request(&device.id) {
        return refused(429, e.to_string());
    }
    let patch = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
    {
        Ok(patch) => patch,
        Err(e) => {
            return refused(
                400,
                format!("reported properties must be a JSON object: {e}"),
            );
        }
    };
    let changed = gateway
        .registry()
        .change_twin(
            &device.tenant,
            &device.id,
            Side::Reported,
            patch,
            false,
            None,
        )
        .await;
    match changed {
        Ok(device) => (204, String::new(), Some(device.twin.reported.version())),
        Err(e @ RegistryError::Invalid { .. }) => refused(400, e.to_string()),
        Err(e) => {
            tracing::warn!(device = %device.id, error = %e, "reported properties not stored");
            refused(503, format!("not stored, try again: {e}"))
        }
    }
}

/// One message's way to the bus: the device's rate (waited out: MQTT has backpressure), then
/// the format its topic names.
async fn ingest(
    gateway: &Gateway,
    device: &Device,
    publish: &codec::Publish,
) -> Result<usize, IngestError> {
    loop {
        match gateway.limits().device_request(&device.id) {
            Ok(()) => break,
            Err(IngestError::RateLimited { retry_after, .. }) => {
                tokio::time::sleep(retry_after).await;
            }
            Err(e) => return Err(e),
        }
    }
    let payload = &publish.payload;
    match topics::route(&publish.topic) {
        Some(Route::WeirJson) => gateway.ingest_json(device, protocol::MQTT, payload).await,
        Some(Route::WeirSenml) => {
            let max = gateway.config().max_readings_per_request.saturating_mul(16);
            let drafts = senml::parse(payload, now_micros(), max).map_err(IngestError::from);
            gateway
                .ingest_drafts(device, protocol::SENML, payload, drafts)
                .await
        }
        Some(Route::IotHubEvents { device: named, bag }) => {
            if named != device.id {
                return Err(IngestError::PathMismatch {
                    path: named.to_owned(),
                    authenticated: device.id.clone(),
                });
            }
            let max = gateway.config().max_readings_per_request;
            let drafts = Message::from_property_bag(bag)
                .map(|mut message| {
                    if message.content_type.is_none() {
                        message.content_type = publish.content_type.as_deref().map(str::to_owned);
                    }
                    message
                })
                .and_then(|message| iothub::translate(payload, &message, max))
                .map_err(IngestError::from);
            gateway
                .ingest_drafts(device, protocol::IOTHUB_MQTT, payload, drafts)
                .await
        }
        _ => Err(IngestError::TopicNotAllowed(publish.topic.to_string())),
    }
}

fn outcome_of(error: &IngestError) -> Outcome {
    let text = error.to_string();
    match error {
        e if e.is_undecodable() => Outcome::PayloadFormatInvalid(text),
        IngestError::TopicNotAllowed(_) => Outcome::TopicNameInvalid(text),
        IngestError::PathMismatch { .. } | IngestError::DeviceNotEnabled { .. } => {
            Outcome::NotAuthorized(text)
        }
        IngestError::RateLimited { .. } | IngestError::OverQuota { .. } => {
            Outcome::QuotaExceeded(text)
        }
        _ => Outcome::Unspecified(text),
    }
}

fn frame_error(error: FrameError) -> Ended {
    let reason = match error {
        FrameError::TooLarge { .. } => DisconnectReason::PacketTooLarge,
        _ => DisconnectReason::ProtocolError,
    };
    Ended::Server(reason, error.to_string())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn send(
    writer: &mut (impl AsyncWrite + Unpin),
    version: Version,
    packet: Outbound,
) -> std::io::Result<()> {
    match codec::encode(version, packet) {
        Some(bytes) => writer.write_all(&bytes).await,
        None => Ok(()),
    }
}

async fn send_or_end(writer: &mut Writer, version: Version, packet: Outbound) -> Result<(), Ended> {
    send(writer, version, packet)
        .await
        .map_err(|_| Ended::Client)
}
