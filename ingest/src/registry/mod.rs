//! The registry: tenants, their buildings, and the devices that may send.
//!
//! It is a materialised view of a log of changes ([`log`]): a registry replays the log on
//! start and applies every change it appends, so that a restarted gateway knows what it knew.
//! Device lookups are on the hot path of every request and go to a lock-free map
//! ([`papaya`]); changes are rare, serialised by one writer lock, validated against the current
//! state, made durable in the log, and only then applied.

mod alerting;
pub mod conformance;
pub mod log;
pub mod model;
pub mod secrets;
pub mod twin;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use log::{BusLog, Change, Entity, FileLog, MemoryLog, RegistryLog};
pub use model::{Building, Device, DeviceKeys, DeviceState, KeySlot, Tenant, normalise_dev_eui};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("item {index}: {source}")]
    Item {
        index: usize,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{what} `{id}` already exists")]
    Exists { what: &'static str, id: String },
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("version {expected} was expected, the device is at version {actual}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("cannot read or write the registry log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry log {path} is corrupt at line {line}: {source}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("registry: {0}")]
    Internal(String),
}

impl RegistryError {
    fn at(self, index: usize) -> Self {
        RegistryError::Item {
            index,
            source: Box::new(self),
        }
    }
}

/// How a batch of devices meets devices that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// An existing id is an error, and nothing is imported.
    #[default]
    Create,
    /// An existing device of the same tenant is replaced (keys kept unless given).
    Upsert,
}

/// A device as an administrator describes it: everything optional that weir can fill in.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub id: String,
    pub building: String,
    #[serde(default)]
    pub floor: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// LoRaWAN DevEUI, for devices whose uplinks come through a network server.
    #[serde(default)]
    pub dev_eui: Option<String>,
    /// `enabled` when absent.
    #[serde(default)]
    pub state: Option<DeviceState>,
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<DeviceKeys>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl NewDevice {
    /// A device in `building` with the given keys (base64).
    pub fn with_keys(id: &str, building: &str, primary: &str, secondary: &str) -> Self {
        NewDevice {
            id: id.into(),
            building: building.into(),
            keys: Some(DeviceKeys {
                primary: primary.into(),
                secondary: secondary.into(),
            }),
            ..NewDevice::default()
        }
    }
}

/// Changes to a device's placement and description; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    #[serde(default)]
    pub building: Option<String>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    pub floor: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub room: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub model: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub dev_eui: Option<Option<String>>,
    #[serde(default)]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Which devices a listing returns.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub building: Option<String>,
    pub state: Option<DeviceState>,
    /// `(name, value)`: devices carrying this tag.
    pub tag: Option<(String, String)>,
}

impl DeviceFilter {
    fn matches(&self, device: &Device) -> bool {
        self.building.as_ref().is_none_or(|b| *b == device.building)
            && self.state.is_none_or(|s| s == device.state)
            && self
                .tag
                .as_ref()
                .is_none_or(|(k, v)| device.tags.get(k) == Some(v))
    }
}

/// The registry's state, and the log it comes from.
pub struct Registry {
    tenants: papaya::HashMap<String, Arc<Tenant>>,
    /// SHA-256 of a tenant API key to the tenant.
    tenant_keys: papaya::HashMap<String, String>,
    /// `tenant/building` to the building.
    buildings: papaya::HashMap<String, Arc<Building>>,
    devices: papaya::HashMap<String, Arc<Device>>,
    /// LoRaWAN DevEUI to device id.
    dev_euis: papaya::HashMap<String, String>,
    /// `tenant/rule id` to the rule.
    alert_rules: papaya::HashMap<String, Arc<weir_schemas::alerts::AlertRule>>,
    /// `(tenant, device id)`, ordered: listings page through it.
    order: RwLock<BTreeSet<(String, String)>>,
    log: Box<dyn RegistryLog>,
    /// One writer at a time: a change is checked against the state it will apply to.
    writer: tokio::sync::Mutex<()>,
    /// With a shared log: the offset through which its changes are applied here.
    applied: tokio::sync::watch::Sender<Option<u64>>,
    /// Ids of devices as they change, for whoever holds something a device was granted
    /// (an open MQTT connection) and must look again.
    device_changes: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// Device changes a slow watcher may fall behind by before it is told it lagged.
const DEVICE_CHANGES_BUFFER: usize = 4096;

/// How long a write waits to see itself come back from a shared log.
const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Registry {
    /// A registry that keeps nothing past the process.
    pub fn in_memory() -> Self {
        Self::with_log(Box::new(MemoryLog), Vec::new())
    }

    /// A registry kept in a JSON-lines log file, replayed now.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let (log, changes) = FileLog::open(path)?;
        Ok(Self::with_log(Box::new(log), changes))
    }

    /// A registry over `log`, starting from `changes` (the log's content so far).
    pub fn with_log(log: Box<dyn RegistryLog>, changes: Vec<Change>) -> Self {
        let registry = Registry {
            tenants: papaya::HashMap::new(),
            tenant_keys: papaya::HashMap::new(),
            buildings: papaya::HashMap::new(),
            devices: papaya::HashMap::new(),
            dev_euis: papaya::HashMap::new(),
            alert_rules: papaya::HashMap::new(),
            order: RwLock::new(BTreeSet::new()),
            log,
            writer: tokio::sync::Mutex::new(()),
            applied: tokio::sync::watch::Sender::new(None),
            device_changes: tokio::sync::broadcast::Sender::new(DEVICE_CHANGES_BUFFER),
        };
        for change in changes {
            registry.apply(change);
        }
        registry
    }

    /// Applies one change to the view; changes that come from another writer (a shared log)
    /// come through here too. Returns false, and changes nothing, for a change that must not
    /// follow the state it meets: the same rules hold on every registry that follows a shared
    /// log, so all of them settle on the same state when two gateways race:
    /// - a device keeps its tenant, and its version only grows (a stale update loses);
    /// - a revoked device stays revoked;
    /// - a tenant is created once (a second creation under the same id loses).
    pub fn apply(&self, change: Change) -> bool {
        let Some(value) = change.value else {
            self.remove(&change.key);
            return true;
        };
        match value {
            Entity::Tenant(tenant) => {
                let tenants = self.tenants.pin();
                let keys = self.tenant_keys.pin();
                if let Some(old) = tenants.get(&tenant.id) {
                    if old.created_us != tenant.created_us {
                        tracing::warn!(tenant = %tenant.id, "a second creation of a tenant is ignored");
                        return false;
                    }
                    // New keys in before old ones out: the key kept keeps working throughout.
                    for hash in &tenant.api_key_hashes {
                        keys.insert(hash.clone(), tenant.id.clone());
                    }
                    for hash in &old.api_key_hashes {
                        if !tenant.api_key_hashes.contains(hash) {
                            keys.remove(hash);
                        }
                    }
                } else {
                    for hash in &tenant.api_key_hashes {
                        keys.insert(hash.clone(), tenant.id.clone());
                    }
                }
                tenants.insert(tenant.id.clone(), Arc::new(tenant));
            }
            Entity::Building(building) => {
                let key = format!("{}/{}", building.tenant, building.id);
                self.buildings.pin().insert(key, Arc::new(building));
            }
            Entity::Device(device) => {
                let mut order = self.order.write().unwrap_or_else(|e| e.into_inner());
                let devices = self.devices.pin();
                if let Some(old) = devices.get(&device.id) {
                    let refused = if old.tenant != device.tenant {
                        Some("it belongs to another tenant")
                    } else if device.version <= old.version {
                        Some("it is older than the device's current version")
                    } else if old.state == DeviceState::Revoked
                        && device.state != DeviceState::Revoked
                    {
                        Some("the device is revoked")
                    } else {
                        None
                    };
                    if let Some(reason) = refused {
                        tracing::warn!(device = %device.id, version = device.version, reason, "a registry change is ignored");
                        return false;
                    }
                    order.remove(&(old.tenant.clone(), old.id.clone()));
                    if let Some(eui) = &old.dev_eui
                        && old.dev_eui != device.dev_eui
                    {
                        self.dev_euis.pin().remove(eui);
                    }
                }
                if let Some(eui) = &device.dev_eui {
                    self.dev_euis.pin().insert(eui.clone(), device.id.clone());
                }
                order.insert((device.tenant.clone(), device.id.clone()));
                let id: Arc<str> = Arc::from(device.id.as_str());
                devices.insert(device.id.clone(), Arc::new(device));
                // Nobody watching is no error.
                let _ = self.device_changes.send(id);
            }
            Entity::AlertRule(rule) => {
                let key = format!("{}/{}", rule.tenant, rule.id);
                self.alert_rules.pin().insert(key, Arc::new(rule));
            }
        }
        true
    }

    /// Whether the view holds exactly what `change` says.
    fn holds(&self, change: &Change) -> bool {
        match &change.value {
            None => {
                if let Some(id) = change.key.strip_prefix("device/") {
                    self.get(id).is_none()
                } else if let Some(id) = change.key.strip_prefix("tenant/") {
                    self.tenant(id).is_none()
                } else if let Some(key) = change.key.strip_prefix("building/") {
                    self.buildings.pin().get(key).is_none()
                } else if let Some(key) = change.key.strip_prefix("alert-rule/") {
                    self.alert_rules.pin().get(key).is_none()
                } else {
                    true
                }
            }
            Some(Entity::Device(d)) => self.get(&d.id).is_some_and(|c| *c == *d),
            Some(Entity::Tenant(t)) => self.tenant(&t.id).is_some_and(|c| *c == *t),
            Some(Entity::Building(b)) => self.building(&b.tenant, &b.id).is_some_and(|c| *c == *b),
            Some(Entity::AlertRule(r)) => {
                self.alert_rule(&r.tenant, &r.id).is_some_and(|c| *c == *r)
            }
        }
    }

    fn remove(&self, key: &str) {
        if let Some(id) = key.strip_prefix("tenant/") {
            if let Some(old) = self.tenants.pin().remove(id) {
                let keys = self.tenant_keys.pin();
                for hash in &old.api_key_hashes {
                    keys.remove(hash);
                }
            }
        } else if let Some(key) = key.strip_prefix("building/") {
            self.buildings.pin().remove(key);
        } else if let Some(key) = key.strip_prefix("alert-rule/") {
            self.alert_rules.pin().remove(key);
        } else if let Some(id) = key.strip_prefix("device/")
            && let Some(old) = self.devices.pin().remove(id)
        {
            let mut order = self.order.write().unwrap_or_else(|e| e.into_inner());
            order.remove(&(old.tenant.clone(), old.id.clone()));
            if let Some(eui) = &old.dev_eui {
                self.dev_euis
                    .pin()
                    .remove_if(eui, |_, id| *id == old.id)
                    .ok();
            }
            let _ = self.device_changes.send(Arc::from(old.id.as_str()));
        }
    }

    /// Records that a shared log's changes are applied through `offset`.
    pub fn applied_through(&self, offset: u64) {
        self.applied.send_if_modified(|applied| {
            let newer = applied.is_none_or(|a| a < offset);
            if newer {
                *applied = Some(offset);
            }
            newer
        });
    }

    /// Logs `changes` durably, then applies them (or waits until the log's follower has).
    async fn commit(&self, changes: Vec<Change>) -> Result<(), RegistryError> {
        match self.log.append(changes.clone()).await? {
            None => {
                for change in changes {
                    self.apply(change);
                }
                Ok(())
            }
            Some(offset) => {
                let mut applied = self.applied.subscribe();
                let seen = applied.wait_for(|a| a.is_some_and(|a| a >= offset));
                if !matches!(tokio::time::timeout(APPLY_TIMEOUT, seen).await, Ok(Ok(_))) {
                    return Err(RegistryError::Internal(format!(
                        "the change was logged (offset {offset}) but has not come back from \
                         the registry topic within {APPLY_TIMEOUT:?}; it will apply when it does"
                    )));
                }
                // Another gateway may have changed the same thing first: then ours lost.
                if changes.iter().all(|c| self.holds(c)) {
                    Ok(())
                } else {
                    Err(RegistryError::Conflict(
                        "changed at the same time through another gateway; read it again and \
                         retry"
                            .into(),
                    ))
                }
            }
        }
    }

    // Reads. -------------------------------------------------------------------------------

    /// The device with this id, whatever its tenant: the hot path of authentication.
    pub fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.devices.pin().get(id).cloned()
    }

    /// The device with this id if it belongs to `tenant`; another tenant's device is as
    /// absent as one that does not exist.
    pub fn device(&self, tenant: &str, id: &str) -> Option<Arc<Device>> {
        self.get(id).filter(|d| d.tenant == tenant)
    }

    /// The ids of devices as they change (created, updated, disabled, revoked, deleted),
    /// here or on any gateway sharing the registry. A receiver that falls behind gets
    /// `Lagged` and must look at every device it cares about.
    pub fn watch_devices(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.device_changes.subscribe()
    }

    /// A DevEUI names one device: network servers' uplinks are found by it.
    fn check_dev_eui_free(&self, device: &Device) -> Result<(), RegistryError> {
        if let Some(eui) = &device.dev_eui
            && let Some(holder) = self.dev_euis.pin().get(eui)
            && *holder != device.id
        {
            return Err(RegistryError::Conflict(format!(
                "DevEUI {eui} belongs to another device"
            )));
        }
        Ok(())
    }

    /// The device of `tenant` with LoRaWAN DevEUI `eui` (any spelling).
    pub fn device_by_dev_eui(&self, tenant: &str, eui: &str) -> Option<Arc<Device>> {
        let id = self.dev_euis.pin().get(&normalise_dev_eui(eui))?.clone();
        self.device(tenant, &id)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.pin().get(id).cloned()
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self.tenants.pin().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The tenant holding this API key.
    pub fn tenant_by_api_key(&self, key: &str) -> Option<Arc<Tenant>> {
        let hash = secrets::api_key_hash(key);
        let id = self.tenant_keys.pin().get(&hash).cloned()?;
        self.tenant(&id)
    }

    pub fn building(&self, tenant: &str, id: &str) -> Option<Arc<Building>> {
        self.buildings.pin().get(&format!("{tenant}/{id}")).cloned()
    }

    pub fn buildings(&self, tenant: &str) -> Vec<Arc<Building>> {
        let mut all: Vec<_> = self
            .buildings
            .pin()
            .values()
            .filter(|b| b.tenant == tenant)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Up to `limit` devices of `tenant` matching `filter`, in id order, after id `after`.
    /// Returns them and the id to continue after, if there may be more.
    pub fn list_devices(
        &self,
        tenant: &str,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Device>>, Option<String>) {
        use std::ops::Bound;
        let order = self.order.read().unwrap_or_else(|e| e.into_inner());
        let start = match after {
            Some(after) => Bound::Excluded((tenant.to_owned(), after.to_owned())),
            None => Bound::Included((tenant.to_owned(), String::new())),
        };
        let devices = self.devices.pin();
        let mut page = Vec::new();
        for (t, id) in order.range((start, Bound::Unbounded)) {
            if t != tenant {
                break;
            }
            if let Some(device) = devices.get(id)
                && filter.matches(device)
            {
                if page.len() == limit {
                    let next = page.last().map(|d: &Arc<Device>| d.id.clone());
                    return (page, next);
                }
                page.push(device.clone());
            }
        }
        (page, None)
    }

    // Writes. ------------------------------------------------------------------------------

    /// Creates a tenant; returns it with its primary API key, which is not kept and cannot be
    /// shown again.
    pub async fn create_tenant(
        &self,
        id: &str,
        name: &str,
    ) -> Result<(Arc<Tenant>, String), RegistryError> {
        let _writer = self.writer.lock().await;
        if self.tenant(id).is_some() {
            return Err(RegistryError::Exists {
                what: "tenant",
                id: id.to_owned(),
            });
        }
        let primary = secrets::tenant_api_key();
        let secondary = secrets::tenant_api_key();
        let tenant = Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            api_key_hashes: vec![
                secrets::api_key_hash(&primary),
                secrets::api_key_hash(&secondary),
            ],
            created_us: now_us(),
            webhook: None,
        };
        tenant.validate()?;
        self.commit(vec![Change::put(Entity::Tenant(tenant))])
            .await?;
        let tenant = self.tenant(id).ok_or_else(|| not_found("tenant", id))?;
        Ok((tenant, primary))
    }

    /// Replaces one of a tenant's two API keys by a new one, returned (and not kept).
    pub async fn rotate_tenant_key(
        &self,
        id: &str,
        slot: KeySlot,
    ) -> Result<String, RegistryError> {
        let _writer = self.writer.lock().await;
        let mut tenant = (*self.tenant(id).ok_or_else(|| not_found("tenant", id))?).clone();
        let key = secrets::tenant_api_key();
        let index = match slot {
            KeySlot::Primary => 0,
            KeySlot::Secondary => 1,
        };
        tenant.api_key_hashes.resize(2, String::new());
        tenant.api_key_hashes[index] = secrets::api_key_hash(&key);
        self.commit(vec![Change::put(Entity::Tenant(tenant))])
            .await?;
        Ok(key)
    }

    /// Creates or replaces a building of an existing tenant. Floors and rooms still used by
    /// devices cannot be dropped.
    pub async fn put_building(&self, building: Building) -> Result<Arc<Building>, RegistryError> {
        building.validate()?;
        let _writer = self.writer.lock().await;
        if self.tenant(&building.tenant).is_none() {
            return Err(not_found("tenant", &building.tenant));
        }
        let (devices, _) = self.list_devices(
            &building.tenant,
            &DeviceFilter {
                building: Some(building.id.clone()),
                ..DeviceFilter::default()
            },
            None,
            usize::MAX,
        );
        for device in devices {
            building
                .check_place(device.floor.as_deref(), device.room.as_deref())
                .map_err(|e| {
                    RegistryError::Conflict(format!(
                        "device `{}` is placed where the new layout has no place: {e}",
                        device.id
                    ))
                })?;
        }
        let (tenant, id) = (building.tenant.clone(), building.id.clone());
        self.commit(vec![Change::put(Entity::Building(building))])
            .await?;
        self.building(&tenant, &id)
            .ok_or_else(|| not_found("building", &id))
    }

    /// Deletes a building that no device is placed in.
    pub async fn delete_building(&self, tenant: &str, id: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().await;
        if self.building(tenant, id).is_none() {
            return Err(not_found("building", id));
        }
        let filter = DeviceFilter {
            building: Some(id.to_owned()),
            ..DeviceFilter::default()
        };
        if let Some(device) = self.list_devices(tenant, &filter, None, 1).0.first() {
            return Err(RegistryError::Conflict(format!(
                "building `{id}` still has devices (`{}` among them); move or delete them first",
                device.id
            )));
        }
        self.commit(vec![Change::delete(log::building_key(tenant, id))])
            .await
    }

    /// Adds devices to `tenant`, all or none. With `create_buildings`, buildings they name
    /// that do not exist are created (with no floor plan); otherwise that is an error.
    pub async fn import_devices(
        &self,
        tenant: &str,
        devices: Vec<NewDevice>,
        mode: ImportMode,
        create_buildings: bool,
    ) -> Result<Vec<Arc<Device>>, RegistryError> {
        let _writer = self.writer.lock().await;
        if self.tenant(tenant).is_none() {
            return Err(not_found("tenant", tenant));
        }
        let now = now_us();
        let mut changes = Vec::with_capacity(devices.len());
        let mut seen = std::collections::HashSet::with_capacity(devices.len());
        let mut new_buildings = std::collections::BTreeSet::new();
        let mut ids = Vec::with_capacity(devices.len());
        for (index, new) in devices.into_iter().enumerate() {
            let existing = self.get(&new.id);
            let device = (|| {
                if !seen.insert(new.id.clone()) {
                    return Err(RegistryError::Conflict(format!(
                        "device `{}` appears twice",
                        new.id
                    )));
                }
                let previous = match (&existing, mode) {
                    (Some(d), _) if d.tenant != tenant => {
                        // Ids are global; do not reveal which tenant holds one.
                        return Err(RegistryError::Exists {
                            what: "device",
                            id: new.id.clone(),
                        });
                    }
                    (Some(d), ImportMode::Create) => {
                        return Err(RegistryError::Exists {
                            what: "device",
                            id: d.id.clone(),
                        });
                    }
                    (Some(d), ImportMode::Upsert) => Some(d.clone()),
                    (None, _) => None,
                };
                let device = Device {
                    tenant: tenant.to_owned(),
                    state: new.state.unwrap_or(match &previous {
                        Some(d) => d.state,
                        None => DeviceState::Enabled,
                    }),
                    keys: match (new.keys, &previous) {
                        (Some(keys), _) => keys,
                        (None, Some(d)) => d.keys.clone(),
                        (None, None) => DeviceKeys::generate(),
                    },
                    // An import places and keys a device; its twin stays as it was.
                    twin: previous
                        .as_ref()
                        .map(|d| d.twin.clone())
                        .unwrap_or_default(),
                    version: previous.as_ref().map_or(1, |d| d.version + 1),
                    created_us: previous.as_ref().map_or(now, |d| d.created_us),
                    updated_us: now,
                    id: new.id,
                    building: new.building,
                    floor: new.floor,
                    room: new.room,
                    model: new.model,
                    dev_eui: new.dev_eui.as_deref().map(normalise_dev_eui),
                    tags: new.tags,
                };
                device.validate()?;
                self.check_dev_eui_free(&device)?;
                if previous.is_some_and(|d| d.state == DeviceState::Revoked)
                    && device.state != DeviceState::Revoked
                {
                    return Err(revoked(&device.id));
                }
                match self.building(tenant, &device.building) {
                    Some(building) => {
                        building.check_place(device.floor.as_deref(), device.room.as_deref())?
                    }
                    None if create_buildings => {
                        new_buildings.insert(device.building.clone());
                    }
                    None => return Err(not_found("building", &device.building)),
                }
                Ok(device)
            })()
            .map_err(|e| e.at(index))?;
            ids.push(device.id.clone());
            changes.push(Change::put(Entity::Device(device)));
        }
        let buildings = new_buildings.into_iter().map(|id| {
            Change::put(Entity::Building(Building {
                tenant: tenant.to_owned(),
                id,
                name: String::new(),
                floors: Default::default(),
            }))
        });
        let changes: Vec<Change> = buildings.chain(changes).collect();
        self.commit(changes).await?;
        Ok(ids.iter().filter_map(|id| self.get(id)).collect())
    }

    /// Creates `tenant` if it does not exist, and adds or replaces `devices` in it, creating
    /// their buildings: the way an embedding program (the demo, tests) loads a known fleet.
    pub async fn provision(
        &self,
        tenant: &str,
        devices: Vec<NewDevice>,
    ) -> Result<Vec<Arc<Device>>, RegistryError> {
        match self.create_tenant(tenant, tenant).await {
            Ok(_) | Err(RegistryError::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        self.import_devices(tenant, devices, ImportMode::Upsert, true)
            .await
    }

    /// Applies `patch` to a device of `tenant`, if it is at `if_version` (when given).
    pub async fn update_device(
        &self,
        tenant: &str,
        id: &str,
        patch: DevicePatch,
        if_version: Option<u64>,
    ) -> Result<Arc<Device>, RegistryError> {
        self.change_device(tenant, id, if_version, |device| {
            if let Some(building) = patch.building {
                device.building = building;
            }
            if let Some(floor) = patch.floor {
                device.floor = floor;
            }
            if let Some(room) = patch.room {
                device.room = room;
            }
            if let Some(model) = patch.model {
                device.model = model;
            }
            if let Some(eui) = patch.dev_eui {
                device.dev_eui = eui.as_deref().map(normalise_dev_eui);
                self.check_dev_eui_free(device)?;
            }
            if let Some(tags) = patch.tags {
                device.tags = tags;
            }
            Ok(())
        })
        .await
    }

    /// Moves a device to `state`. A revoked device stays revoked.
    pub async fn set_state(
        &self,
        tenant: &str,
        id: &str,
        state: DeviceState,
    ) -> Result<Arc<Device>, RegistryError> {
        self.change_device(tenant, id, None, |device| {
            device.state = state;
            Ok(())
        })
        .await
    }

    /// Replaces one key of a device by a fresh random one.
    pub async fn rotate_device_key(
        &self,
        tenant: &str,
        id: &str,
        slot: KeySlot,
    ) -> Result<Arc<Device>, RegistryError> {
        self.change_device(tenant, id, None, |device| {
            let key = secrets::random_key();
            match slot {
                KeySlot::Primary => device.keys.primary = key,
                KeySlot::Secondary => device.keys.secondary = key,
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_device(&self, tenant: &str, id: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().await;
        self.device(tenant, id)
            .ok_or_else(|| not_found("device", id))?;
        self.commit(vec![Change::delete(log::device_key(id))]).await
    }

    async fn change_device(
        &self,
        tenant: &str,
        id: &str,
        if_version: Option<u64>,
        change: impl FnOnce(&mut Device) -> Result<(), RegistryError>,
    ) -> Result<Arc<Device>, RegistryError> {
        let _writer = self.writer.lock().await;
        let current = self
            .device(tenant, id)
            .ok_or_else(|| not_found("device", id))?;
        if let Some(expected) = if_version
            && expected != current.version
        {
            return Err(RegistryError::VersionMismatch {
                expected,
                actual: current.version,
            });
        }
        if current.state == DeviceState::Revoked {
            return Err(revoked(id));
        }
        let mut device = (*current).clone();
        change(&mut device)?;
        device.version += 1;
        device.updated_us = now_us();
        device.validate()?;
        let building = self
            .building(tenant, &device.building)
            .ok_or_else(|| not_found("building", &device.building))?;
        building.check_place(device.floor.as_deref(), device.room.as_deref())?;
        self.commit(vec![Change::put(Entity::Device(device))])
            .await?;
        self.get(id).ok_or_else(|| not_found("device", id))
    }
}

/// API tokens as the registry knows them: tenants' API keys, and the operator's token.
pub struct ApiTokens {
    pub registry: Arc<Registry>,
    pub operator_token: Option<String>,
}

impl weir_common::http::Tokens for ApiTokens {
    fn scope(&self, token: &str) -> Option<weir_common::http::Scope> {
        use subtle::ConstantTimeEq;
        if let Some(operator) = &self.operator_token
            && bool::from(token.as_bytes().ct_eq(operator.as_bytes()))
        {
            return Some(weir_common::http::Scope::Operator);
        }
        self.registry
            .tenant_by_api_key(token)
            .map(|t| weir_common::http::Scope::Tenant(t.id.clone()))
    }
}

fn not_found(what: &'static str, id: &str) -> RegistryError {
    RegistryError::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn revoked(id: &str) -> RegistryError {
    RegistryError::Conflict(format!(
        "device `{id}` is revoked, which is final; delete it and provision it again"
    ))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
