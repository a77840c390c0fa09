//! MQTT 3.1.1 and 5 packets, through the `mqtt-proto` codec, as the few things the gateway
//! needs of them: [`Inbound`] from a device, [`Outbound`] to it. The version is fixed by the
//! CONNECT packet; everything after it is read and written in that version.

use std::sync::Arc;

use bytes::Bytes;
use mqtt_proto::{Pid, QosPid, TopicName, v3, v5};

/// MQTT 3.1 and 3.1.1 (protocol levels 3 and 4) share a codec; 5 has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3,
    V5,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("the packet's remaining length is not a valid variable-byte integer")]
    BadLength,
    #[error("a packet of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("malformed {what} packet: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the first packet must be CONNECT")]
    NotConnect,
    #[error("MQTT protocol level {0} is not supported; use 3.1.1 (4) or 5")]
    UnsupportedLevel(u8),
}

/// Whether `buf` begins with a whole packet: its length then, `None` if more bytes are needed.
/// A packet over `max_bytes` is refused from its fixed header, before its body arrives.
pub fn frame(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, FrameError> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let size = 2 + i + remaining;
            if size > max_bytes {
                return Err(FrameError::TooLarge {
                    size,
                    max: max_bytes,
                });
            }
            return Ok((buf.len() >= size).then_some(size));
        }
    }
    Err(FrameError::BadLength)
}

/// What a CONNECT says, whatever the version.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: Version,
    pub client_id: Arc<str>,
    pub password: Option<Bytes>,
    pub keep_alive_secs: u16,
    /// 3.1.1 clean session, 5 clean start.
    pub clean: bool,
    /// 5 only: how long the session outlives the connection; 3.1.1: for ever unless clean.
    pub session_expiry_secs: Option<u32>,
}

/// A PUBLISH from the device.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: Arc<str>,
    pub qos: u8,
    pub pid: Option<u16>,
    pub payload: Bytes,
    /// 5 only: the content type property.
    pub content_type: Option<Arc<str>>,
}

#[derive(Debug)]
pub enum Inbound {
    Connect(Connect),
    Publish(Publish),
    /// The device acknowledges a QoS 1 message weir sent.
    Puback,
    Pubrel(u16),
    Subscribe {
        pid: u16,
        filters: Vec<(Arc<str>, u8)>,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<Arc<str>>,
    },
    Pingreq,
    Disconnect,
    /// A packet only a server sends, or one weir does not take (AUTH).
    Unexpected(&'static str),
}

/// How the handling of a message ended, as acknowledgements carry it (5 only; 3.1.1
/// acknowledgements have no room for it).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    NotAuthorized(String),
    TopicNameInvalid(String),
    QuotaExceeded(String),
    PayloadFormatInvalid(String),
    Unspecified(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConnackCode {
    Accepted,
    BadCredentials,
    NotAuthorized,
    ClientIdRejected,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DisconnectReason {
    SessionTakenOver,
    NotAuthorized,
    KeepAliveTimeout,
    PacketTooLarge,
    ProtocolError,
    ServerShuttingDown,
    ServerBusy,
}

#[derive(Debug)]
pub enum Outbound {
    Connack {
        session_present: bool,
        code: ConnackCode,
        /// 5: what the server allows, told in the CONNACK.
        receive_max: u16,
        max_packet_bytes: u32,
        reason: Option<String>,
    },
    Puback(u16, Outcome),
    Pubrec(u16, Outcome),
    Pubcomp(u16),
    /// Granted QoS per filter; `None`: refused.
    Suback(u16, Vec<Option<u8>>),
    Unsuback(u16, usize),
    Pingresp,
    /// A QoS 0 message to the device.
    Publish {
        topic: String,
        payload: Bytes,
    },
    /// 5 only; a 3.1.1 server just closes.
    Disconnect(DisconnectReason, String),
}

/// Reads the protocol level of a CONNECT from its bytes, to pick the codec.
pub fn connect_version(packet: &[u8]) -> Result<Version, FrameError> {
    if packet.first().map(|b| b >> 4) != Some(1) {
        return Err(FrameError::NotConnect);
    }
    // Fixed header, then the protocol name (two length bytes and the name), then the level.
    let header = 1
        + packet[1..]
            .iter()
            .take(4)
            .take_while(|b| *b & 0x80 != 0)
            .count()
        + 1;
    let malformed = || FrameError::Malformed {
        what: "CONNECT",
        reason: "it ends before the protocol level".into(),
    };
    let name_len = match (packet.get(header), packet.get(header + 1)) {
        (Some(hi), Some(lo)) => usize::from(*hi) << 8 | usize::from(*lo),
        _ => return Err(malformed()),
    };
    match packet.get(header + 2 + name_len) {
        Some(3 | 4) => Ok(Version::V3),
        Some(5) => Ok(Version::V5),
        Some(level) => Err(FrameError::UnsupportedLevel(*level)),
        None => Err(malformed()),
    }
}

/// Decodes one whole packet (as [`frame`] cut it).
pub fn decode(version: Version, packet: &[u8]) -> Result<Inbound, FrameError> {
    let malformed = |e: mqtt_proto::Error| FrameError::Malformed {
        what: packet_name(packet.first().copied().unwrap_or_default() >> 4),
        reason: e.to_string(),
    };
    let incomplete = || FrameError::Malformed {
        what: packet_name(packet.first().copied().unwrap_or_default() >> 4),
        reason: "it ends early".into(),
    };
    match version {
        Version::V3 => {
            let packet = v3::Packet::decode(packet)
                .map_err(malformed)?
                .ok_or_else(incomplete)?;
            Ok(match packet {
                v3::Packet::Connect(c) => Inbound::Connect(Connect {
                    version,
                    client_id: c.client_id,
                    password: c.password,
                    keep_alive_secs: c.keep_alive,
                    clean: c.clean_session,
                    session_expiry_secs: None,
                }),
                v3::Packet::Publish(p) => Inbound::Publish(Publish {
                    topic: Arc::from(&*p.topic_name),
                    qos: p.qos_pid.qos() as u8,
                    pid: p.qos_pid.pid().map(Pid::value),
                    payload: p.payload,
                    content_type: None,
                }),
                v3::Packet::Puback(_) => Inbound::Puback,
                v3::Packet::Pubrel(pid) => Inbound::Pubrel(pid.value()),
                v3::Packet::Subscribe(s) => Inbound::Subscribe {
                    pid: s.pid.value(),
                    filters: s
                        .topics
                        .into_iter()
                        .map(|(f, q)| (Arc::from(&*f), q as u8))
                        .collect(),
                },
                v3::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                    pid: u.pid.value(),
                    filters: u.topics.iter().map(|f| Arc::from(&**f)).collect(),
                },
                v3::Packet::Pingreq => Inbound::Pingreq,
                v3::Packet::Disconnect => Inbound::Disconnect,
                other => Inbound::Unexpected(packet_name(other.get_type() as u8)),
            })
        }
        Version::V5 => {
            let packet = v5::Packet::decode(packet)
                .map_err(|e| FrameError::Malformed {
                    what: packet_name(packet.first().copied().unwrap_or_default() >> 4),
                    reason: e.to_string(),
                })?
                .ok_or_else(incomplete)?;
            Ok(match packet {
                v5::Packet::Connect(c) => Inbound::Connect(Connect {
                    version,
                    client_id: c.client_id,
                    password: c.password,
                    keep_alive_secs: c.keep_alive,
                    clean: c.clean_start,
                    session_expiry_secs: c.properties.session_expiry_interval,
                }),
                v5::Packet::Publish(p) => Inbound::Publish(Publish {
                    topic: Arc::from(&*p.topic_name),
                    qos: p.qos_pid.qos() as u8,
                    pid: p.qos_pid.pid().map(Pid::value),
                    payload: p.payload,
                    content_type: p.properties.content_type,
                }),
                v5::Packet::Puback(_) => Inbound::Puback,
                v5::Packet::Pubrel(p) => Inbound::Pubrel(p.pid.value()),
                v5::Packet::Subscribe(s) => Inbound::Subscribe {
                    pid: s.pid.value(),
                    filters: s
                        .topics
                        .into_iter()
                        .map(|(f, o)| (Arc::from(&*f), o.max_qos as u8))
                        .collect(),
                },
                v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                    pid: u.pid.value(),
                    filters: u.topics.iter().map(|f| Arc::from(&**f)).collect(),
                },
                v5::Packet::Pingreq => Inbound::Pingreq,
                v5::Packet::Disconnect(_) => Inbound::Disconnect,
                v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
                other => Inbound::Unexpected(packet_name(other.get_type() as u8)),
            })
        }
    }
}

fn packet_name(kind: u8) -> &'static str {
    match kind {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "unknown",
    }
}

/// Encodes a packet for the device; `None` for one its version has no way to say (a
/// 3.1.1 DISCONNECT from the server).
pub fn encode(version: Version, packet: Outbound) -> Option<Vec<u8>> {
    if let (Version::V3, Outbound::Suback(pid, granted)) = (version, &packet) {
        return Some(suback_v3(*pid, granted));
    }
    let bytes = match version {
        Version::V3 => encode_v3(packet)?.encode(),
        Version::V5 => encode_v5(packet)?.encode(),
    };
    // Every packet weir builds is within the codec's limits.
    bytes.ok().map(|b| b.as_ref().to_vec())
}

/// A 3.1.1 SUBACK: packet id, then one return code per filter (the QoS granted, or 0x80).
fn suback_v3(pid: u16, granted: &[Option<u8>]) -> Vec<u8> {
    let mut packet = vec![0x90];
    let mut remaining = 2 + granted.len();
    // The remaining length as MQTT's variable-byte integer.
    loop {
        let byte = (remaining % 128) as u8;
        remaining /= 128;
        packet.push(if remaining > 0 { byte | 0x80 } else { byte });
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend(granted.iter().map(|g| g.map_or(0x80, |q| q.min(2))));
    packet
}

fn pid(value: u16) -> Pid {
    Pid::try_from(value).unwrap_or_default()
}

fn encode_v3(packet: Outbound) -> Option<v3::Packet> {
    Some(match packet {
        Outbound::Connack {
            session_present,
            code,
            ..
        } => v3::Packet::Connack(v3::Connack {
            session_present,
            code: match code {
                ConnackCode::Accepted => v3::ConnectReturnCode::Accepted,
                ConnackCode::BadCredentials => v3::ConnectReturnCode::BadUserNameOrPassword,
                ConnackCode::NotAuthorized => v3::ConnectReturnCode::NotAuthorized,
                ConnackCode::ClientIdRejected => v3::ConnectReturnCode::IdentifierRejected,
            },
        }),
        Outbound::Puback(p, _) => v3::Packet::Puback(pid(p)),
        Outbound::Pubrec(p, _) => v3::Packet::Pubrec(pid(p)),
        Outbound::Pubcomp(p) => v3::Packet::Pubcomp(pid(p)),
        // Written here: the codec writes a 3.1.1 refusal as 3 rather than 0x80.
        Outbound::Suback(..) => return None,
        Outbound::Unsuback(p, _) => v3::Packet::Unsuback(pid(p)),
        Outbound::Pingresp => v3::Packet::Pingresp,
        Outbound::Publish { topic, payload } => v3::Packet::Publish(v3::Publish {
            dup: false,
            retain: false,
            qos_pid: QosPid::Level0,
            topic_name: TopicName::try_from(topic.as_str()).ok()?,
            payload,
        }),
        Outbound::Disconnect(..) => return None,
    })
}

fn encode_v5(packet: Outbound) -> Option<v5::Packet> {
    let text = |s: String| (!s.is_empty()).then(|| Arc::<str>::from(s));
    Some(match packet {
        Outbound::Connack {
            session_present,
            code,
            receive_max,
            max_packet_bytes,
            reason,
        } => v5::Packet::Connack(v5::Connack {
            session_present,
            reason_code: match code {
                ConnackCode::Accepted => v5::ConnectReasonCode::Success,
                ConnackCode::BadCredentials => v5::ConnectReasonCode::BadUserNameOrPassword,
                ConnackCode::NotAuthorized => v5::ConnectReasonCode::NotAuthorized,
                ConnackCode::ClientIdRejected => v5::ConnectReasonCode::ClientIdentifierNotValid,
            },
            properties: v5::ConnackProperties {
                receive_max: Some(receive_max),
                max_packet_size: Some(max_packet_bytes),
                // No maximum QoS: all three are taken (the property may only say 0 or 1).
                retain_available: Some(false),
                wildcard_subscription_available: Some(true),
                shared_subscription_available: Some(false),
                subscription_id_available: Some(false),
                reason_string: reason.map(Arc::from),
                ..Default::default()
            },
        }),
        Outbound::Puback(p, outcome) => {
            let (reason_code, reason) = puback_code(outcome);
            v5::Packet::Puback(v5::Puback {
                pid: pid(p),
                reason_code,
                properties: v5::PubackProperties {
                    reason_string: reason.and_then(text),
                    user_properties: Vec::new(),
                },
            })
        }
        Outbound::Pubrec(p, outcome) => {
            let (code, reason) = puback_code(outcome);
            let reason_code = v5::PubrecReasonCode::from_u8(code as u8)
                .unwrap_or(v5::PubrecReasonCode::UnspecifiedError);
            v5::Packet::Pubrec(v5::Pubrec {
                pid: pid(p),
                reason_code,
                properties: v5::PubrecProperties {
                    reason_string: reason.and_then(text),
                    user_properties: Vec::new(),
                },
            })
        }
        Outbound::Pubcomp(p) => v5::Packet::Pubcomp(v5::Pubcomp {
            pid: pid(p),
            reason_code: v5::PubcompReasonCode::Success,
            properties: Default::default(),
        }),
        Outbound::Suback(p, granted) => v5::Packet::Suback(v5::Suback {
            pid: pid(p),
            properties: Default::default(),
            topics: granted
                .into_iter()
                .map(|g| match g {
                    Some(0) => v5::SubscribeReasonCode::GrantedQoS0,
                    Some(1) => v5::SubscribeReasonCode::GrantedQoS1,
                    Some(_) => v5::SubscribeReasonCode::GrantedQoS2,
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
        }),
        Outbound::Unsuback(p, n) => v5::Packet::Unsuback(v5::Unsuback {
            pid: pid(p),
            properties: Default::default(),
            topics: vec![v5::UnsubscribeReasonCode::Success; n],
        }),
        Outbound::Pingresp => v5::Packet::Pingresp,
        Outbound::Publish { topic, payload } => v5::Packet::Publish(v5::Publish {
            dup: false,
            retain: false,
            qos_pid: QosPid::Level0,
            topic_name: TopicName::try_from(topic.as_str()).ok()?,
            payload,
            properties: Default::default(),
        }),
        Outbound::Disconnect(reason, message) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: match reason {
                DisconnectReason::SessionTakenOver => v5::DisconnectReasonCode::SessionTakenOver,
                DisconnectReason::NotAuthorized => v5::DisconnectReasonCode::NotAuthorized,
                DisconnectReason::KeepAliveTimeout => v5::DisconnectReasonCode::KeepAliveTimeout,
                DisconnectReason::PacketTooLarge => v5::DisconnectReasonCode::PacketTooLarge,
                DisconnectReason::ProtocolError => v5::DisconnectReasonCode::ProtocolError,
                DisconnectReason::ServerShuttingDown => {
                    v5::DisconnectReasonCode::ServerShuttingDown
                }
                DisconnectReason::ServerBusy => v5::DisconnectReasonCode::ServerBusy,
            },
            properties: v5::DisconnectProperties {
                reason_string: text(message),
                ..Default::default()
            },
        }),
    })
}

fn puback_code(outcome: Outcome) -> (v5::PubackReasonCode, Option<String>) {
    use v5::PubackReasonCode as C;
    match outcome {
        Outcome::Success => (C::Success, None),
        Outcome::NotAuthorized(r) => (C::NotAuthorized, Some(r)),
        Outcome::TopicNameInvalid(r) => (C::TopicNameInvalid, Some(r)),
        Outcome::QuotaExceeded(r) => (C::QuotaExceeded, Some(r)),
        Outcome::PayloadFormatInvalid(r) => (C::PayloadFormatInvalid, Some(r)),
        Outcome::Unspecified(r) => (C::UnspecifiedError, Some(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_their_fixed_header() {
        assert_eq!(frame(&[0xc0], 100), Ok(None));
        assert_eq!(frame(&[0xc0, 0x00], 100), Ok(Some(2)));
        assert_eq!(frame(&[0x30, 0x03, 1, 2], 100), Ok(None));
        assert_eq!(frame(&[0x30, 0x03, 1, 2, 3, 9], 100), Ok(Some(5)));
        // 200 bytes of remaining length: two length bytes.
        assert_eq!(
            frame(&[0x30, 0xc8, 0x01], 100),
            Err(FrameError::TooLarge {
                size: 203,
                max: 100
            })
        );
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn the_version_comes_from_the_connect() {
        let v4 = [0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(connect_version(&v4), Ok(Version::V3));
        let mut v5 = v4;
        v5[8] = 5;
        assert_eq!(connect_version(&v5), Ok(Version::V5));
        v5[8] = 9;
        assert_eq!(connect_version(&v5), Err(FrameError::UnsupportedLevel(9)));
        assert_eq!(connect_version(&[0x30, 0]), Err(FrameError::NotConnect));
        assert!(connect_version(&[0x10, 0x02, 0, 4]).is_err());
    }

    #[test]
    fn a_v3_suback_refuses_with_0x80() {
        let bytes = encode(Version::V3, Outbound::Suback(7, vec![Some(1), None])).unwrap();
        assert_eq!(bytes, [0x90, 4, 0, 7, 1, 0x80]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[0x10u8, 0x01, 0xff][..],
            &[0x30, 0x02, 0xff, 0xff],
            &[0x82, 0x00],
        ] {
            for version in [Version::V3, Version::V5] {
                assert!(decode(version, bytes).is_err(), "{bytes:?}");
            }
        }
    }
}
