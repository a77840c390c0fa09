//! What the registry holds: tenants, their buildings and their devices, as they are stored in
//! the registry log and shown by the admin API, and the rules every one of them must satisfy.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::twin::TwinProperties;

/// Longest id, tenant, building, floor, room, model or tag.
pub const MAX_NAME_LEN: usize = 128;
/// Most tags on one device.
pub const MAX_TAGS: usize = 32;
/// Longest display name of a tenant or building.
pub const MAX_DISPLAY_NAME_LEN: usize = 256;
/// Most floors in a building, and rooms on a floor.
pub const MAX_FLOORS: usize = 1000;
pub const MAX_ROOMS_PER_FLOOR: usize = 1000;
/// Sizes a device key may have once base64-decoded (IoT Hub uses 32 bytes).
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// An organisation whose devices and data are kept apart from every other's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// SHA-256 (hex) of each API key the tenant holds: two, so that one can be rotated while
    /// the other keeps working. The keys themselves are shown once, at creation or rotation.
    pub api_key_hashes: Vec<String>,
    /// Microseconds since the Unix epoch.
    pub created_us: i64,
    /// Where the tenant's alerts are delivered, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<weir_schemas::alerts::Webhook>,
}

/// A building of a tenant, with its floors and their rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Building {
    pub tenant: String,
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Floor id to the room ids on it. When empty, devices may name any floor and room; when
    /// not, a device's floor and room must be listed here.
    #[serde(default)]
    pub floors: BTreeMap<String, Vec<String>>,
}

/// Where a device stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Provisioned but not yet allowed to send (factory provisioning); enable it to start.
    Registered,
    /// May send.
    Enabled,
    /// Temporarily refused; can be enabled again.
    Disabled,
    /// Permanently refused (lost, stolen, decommissioned); its keys are void. Final.
    Revoked,
}

impl DeviceState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Registered => "registered",
            DeviceState::Enabled => "enabled",
            DeviceState::Disabled => "disabled",
            DeviceState::Revoked => "revoked",
        }
    }
}

/// The symmetric keys of a device, base64, either of which authenticates it (as in IoT Hub):
/// a fleet rotates one while the other keeps working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeys {
    pub primary: String,
    pub secondary: String,
}

impl DeviceKeys {
    /// Two fresh random 32-byte keys.
    pub fn generate() -> Self {
        Self {
            primary: super::secrets::random_key(),
            secondary: super::secrets::random_key(),
        }
    }

    /// The keys, decoded, with the slot each is in.
    pub fn decoded(&self) -> [(KeySlot, Vec<u8>); 2] {
        [
            (
                KeySlot::Primary,
                BASE64.decode(&self.primary).unwrap_or_default(),
            ),
            (
                KeySlot::Secondary,
                BASE64.decode(&self.secondary).unwrap_or_default(),
            ),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySlot {
    Primary,
    Secondary,
}

/// A provisioned device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Unique within this weir deployment, like a device id within one IoT hub.
    pub id: String,
    pub tenant: String,
    pub building: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The device model, which names its payload driver for protocols that need one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// LoRaWAN DevEUI, 16 lowercase hex digits: how network servers' uplinks find the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_eui: Option<String>,
    pub state: DeviceState,
    pub keys: DeviceKeys,
    /// Free-form labels, for filtering.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Desired and reported properties of the device's twin.
    #[serde(default, skip_serializing_if = "TwinProperties::is_empty")]
    pub twin: TwinProperties,
    /// Incremented by every change; the admin API's optimistic concurrency uses it.
    #[serde(default)]
    pub version: u64,
    /// Microseconds since the Unix epoch.
    #[serde(default)]
    pub created_us: i64,
    #[serde(default)]
    pub updated_us: i64,
}

impl Device {
    /// An enabled device with fresh keys and no floor, room, model or tags.
    pub fn new(id: &str, tenant: &str, building: &str) -> Self {
        Device {
            id: id.into(),
            tenant: tenant.into(),
            building: building.into(),
            floor: None,
            room: None,
            model: None,
            dev_eui: None,
            state: DeviceState::Enabled,
            keys: DeviceKeys::generate(),
            tags: BTreeMap::new(),
            twin: TwinProperties::default(),
            version: 1,
            created_us: 0,
            updated_us: 0,
        }
    }

    /// Whether the device may send now.
    pub fn may_send(&self) -> bool {
        self.state == DeviceState::Enabled
    }
}

/// Checks one name: not empty, not too long, and path-safe, since names end up in bus keys
/// (`tenant/building`) and lake paths (`tenant=…`).
pub fn check_name(field: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid { field, reason };
    if value.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!("is longer than {MAX_NAME_LEN} bytes")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(invalid(format!(
            "`{value}` contains {c:?}; use letters, digits and - _ . : @"
        )));
    }
    Ok(())
}

/// Checks one base64 device key.
pub fn check_key(field: &'static str, key: &str) -> Result<(), RegistryError> {
    match BASE64.decode(key) {
        Ok(bytes) if KEY_BYTES.contains(&bytes.len()) => Ok(()),
        Ok(bytes) => Err(RegistryError::Invalid {
            field,
            reason: format!(
                "decodes to {} bytes; keys must have {} to {} bytes",
                bytes.len(),
                KEY_BYTES.start(),
                KEY_BYTES.end()
            ),
        }),
        Err(e) => Err(RegistryError::Invalid {
            field,
            reason: format!("is not base64: {e}"),
        }),
    }
}

fn check_display_name(field: &'static str, name: &str) -> Result<(), RegistryError> {
    if name.len() > MAX_DISPLAY_NAME_LEN {
        return Err(RegistryError::Invalid {
            field,
            reason: format!("is longer than {MAX_DISPLAY_NAME_LEN} bytes"),
        });
    }
    Ok(())
}

impl Tenant {
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_name("tenant id", &self.id)?;
        check_display_name("name", &self.name)
    }
}

impl Building {
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_name("tenant", &self.tenant)?;
        check_name("building id", &self.id)?;
        check_display_name("name", &self.name)?;
        if self.floors.len() > MAX_FLOORS {
            return Err(RegistryError::Invalid {
                field: "floors",
                reason: format!("{} floors; at most {MAX_FLOORS}", self.floors.len()),
            });
        }
        for (floor, rooms) in &self.floors {
            if rooms.len() > MAX_ROOMS_PER_FLOOR {
                return Err(RegistryError::Invalid {
                    field: "floors",
                    reason: format!(
                        "floor `{floor}` has {} rooms; at most {MAX_ROOMS_PER_FLOOR}",
                        rooms.len()
                    ),
                });
            }
            check_name("floor", floor)?;
            for room in rooms {
                check_name("room", room)?;
            }
        }
        Ok(())
    }

    /// Whether a device may be placed on `floor`, in `room`.
    pub fn check_place(
        &self,
        floor: Option<&str>,
        room: Option<&str>,
    ) -> Result<(), RegistryError> {
        if self.floors.is_empty() {
            return Ok(());
        }
        let unknown = |what: String| RegistryError::Invalid {
            field: "floor",
            reason: what,
        };
        match (floor, room) {
            (None, Some(_)) => Err(unknown("a room is given without its floor".into())),
            (Some(floor), room) => {
                let rooms = self.floors.get(floor).ok_or_else(|| {
                    unknown(format!(
                        "`{floor}` is not a floor of building `{}`",
                        self.id
                    ))
                })?;
                match room {
                    Some(room) if !rooms.iter().any(|r| r == room) => Err(RegistryError::Invalid {
                        field: "room",
                        reason: format!("`{room}` is not a room of floor `{floor}`"),
                    }),
                    _ => Ok(()),
                }
            }
            (None, None) => Ok(()),
        }
    }
}

impl Device {
    pub fn validate(&self) -> Result<(), RegistryError> {
        check_name("id", &self.id)?;
        check_name("tenant", &self.tenant)?;
        check_name("building", &self.building)?;
        for (field, value) in [
            ("floor", &self.floor),
            ("room", &self.room),
            ("model", &self.model),
        ] {
            if let Some(value) = value {
                check_name(field, value)?;
            }
        }
        if let Some(eui) = &self.dev_eui {
            check_dev_eui(eui)?;
        }
        check_key("keys.primary", &self.keys.primary)?;
        check_key("keys.secondary", &self.keys.secondary)?;
        if self.tags.len() > MAX_TAGS {
            return Err(RegistryError::Invalid {
                field: "tags",
                reason: format!("{} tags; at most {MAX_TAGS}", self.tags.len()),
            });
        }
        for (key, value) in &self.tags {
            check_name("tag name", key)?;
            if value.len() > MAX_NAME_LEN {
                return Err(RegistryError::Invalid {
                    field: "tags",
                    reason: format!("the value of `{key}` is longer than {MAX_NAME_LEN} bytes"),
                });
            }
        }
        Ok(())
    }
}

/// A DevEUI as the registry keeps it: 16 lowercase hex digits.
pub fn check_dev_eui(eui: &str) -> Result<(), RegistryError> {
    if eui.len() == 16
        && eui
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            field: "dev_eui",
            reason: format!("`{eui}` is not 16 hex digits"),
        })
    }
}

/// A DevEUI as people write it (`70-B3-D5-7E-D0-05-12-34`, `70B3D57ED0051234`), normalised.
pub fn normalise_dev_eui(eui: &str) -> String {
    eui.chars()
        .filter(|c| !matches!(c, '-' | ':' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}
