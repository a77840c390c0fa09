//! The device registry: who may send, and where their readings belong.
//!
//! Lookups are on the hot path of every request and go to a concurrent map. Changes are rare
//! and go through [`Registry::upsert`], which also rewrites the registry file (when there is
//! one) atomically, so a restarted gateway knows the same devices.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// A provisioned device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Unique within this weir deployment, like a device id within one IoT hub.
    pub id: String,
    pub tenant: String,
    pub building: String,
    #[serde(default)]
    pub floor: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    /// The device's symmetric key, base64 (at least 16 bytes once decoded).
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("device {index}: {field} {reason}")]
    Invalid {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("device {index}: id `{id}` appears twice in one request")]
    Duplicate { index: usize, id: String },
    #[error("the registry file {path} holds an invalid device: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    #[error("cannot read the registry file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry file {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the registry file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Longest id, tenant, building, floor or room.
const MAX_NAME_LEN: usize = 128;

fn check_name(index: usize, field: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        index,
        field,
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!("is longer than {MAX_NAME_LEN} bytes")));
    }
    // '/' separates tenant and building in bus keys and lake paths; keep names path-safe.
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

impl Device {
    fn validate(&self, index: usize) -> Result<(), RegistryError> {
        check_name(index, "id", &self.id)?;
        check_name(index, "tenant", &self.tenant)?;
        check_name(index, "building", &self.building)?;
        if let Some(floor) = &self.floor {
            check_name(index, "floor", floor)?;
        }
        if let Some(room) = &self.room {
            check_name(index, "room", room)?;
        }
        match base64::engine::general_purpose::STANDARD.decode(&self.key) {
            Ok(bytes) if bytes.len() >= 16 => Ok(()),
            Ok(bytes) => Err(RegistryError::Invalid {
                index,
                field: "key",
                reason: format!("decodes to {} bytes; at least 16 are needed", bytes.len()),
            }),
            Err(e) => Err(RegistryError::Invalid {
                index,
                field: "key",
                reason: format!("is not base64: {e}"),
            }),
        }
    }
}

/// Checks every device, and that no id appears twice.
fn validate_all(devices: &[Device]) -> Result<(), RegistryError> {
    let mut seen = HashSet::with_capacity(devices.len());
    for (index, device) in devices.iter().enumerate() {
        device.validate(index)?;
        if !seen.insert(device.id.as_str()) {
            return Err(RegistryError::Duplicate {
                index,
                id: device.id.clone(),
            });
        }
    }
    Ok(())
}

/// The devices this gateway accepts readings from.
#[derive(Default)]
pub struct Registry {
    devices: DashMap<String, Arc<Device>>,
    /// Where the registry is kept, if anywhere.
    path: Option<PathBuf>,
    /// Serialises writers of the file, and holds its modification time as last read or
    /// written, to notice changes made by another process.
    write: Mutex<Option<std::time::SystemTime>>,
}

impl Registry {
    /// A registry that lives only in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A registry kept in `path` (JSON), loaded if the file exists.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let registry = Registry {
            path: Some(path.into()),
            ..Self::default()
        };
        registry.refresh()?;
        Ok(registry)
    }

    /// Reloads the file if another process changed it since it was last read or written.
    /// Returns whether it did.
    pub fn refresh(&self) -> Result<bool, RegistryError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let mut known = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let modified = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(RegistryError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        if *known == Some(modified) {
            return Ok(false);
        }
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Read {
            path: path.clone(),
            source,
        })?;
        let devices: Vec<Device> =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt {
                path: path.clone(),
                source,
            })?;
        // The file may have been edited by hand: hold it to the same rules as the API.
        validate_all(&devices).map_err(|e| RegistryError::InvalidFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let ids: HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        self.devices.retain(|id, _| ids.contains(id.as_str()));
        for device in &devices {
            self.devices
                .insert(device.id.clone(), Arc::new(device.clone()));
        }
        *known = Some(modified);
        Ok(true)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.devices.get(id).map(|d| d.value().clone())
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Adds or replaces devices, all or none: every device is validated before any is stored.
    /// Blocking when the registry has a file; call it off the async runtime.
    pub fn upsert(&self, devices: Vec<Device>) -> Result<usize, RegistryError> {
        let mut seen = HashSet::with_capacity(devices.len());
        for (index, device) in devices.iter().enumerate() {
            device.validate(index)?;
            if !seen.insert(device.id.as_str()) {
                return Err(RegistryError::Duplicate {
                    index,
                    id: device.id.clone(),
                });
            }
        }
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = devices.len();
        for device in devices {
            self.devices.insert(device.id.clone(), Arc::new(device));
        }
        if let Some(path) = &self.path {
            self.persist(path)?;
        }
        Ok(n)
    }

    fn persist(&self, path: &Path) -> Result<(), RegistryError> {
        let mut devices: Vec<Arc<Device>> =
            self.devices.iter().map(|d| d.value().clone()).collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let write = |source| RegistryError::Write {
            path: path.to_owned(),
            source,
        };
        let devices: Vec<&Device> = devices.iter().map(|d| d.as_ref()).collect();
        let bytes = serde_json::to_vec(&devices).map_err(|e| write(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        // Write aside and rename, so a crash leaves the old file or the new one, never half.
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(write)?;
            file.write_all(&bytes).map_err(write)?;
            file.sync_all().map_err(write)?;
        }
        std::fs::rename(&tmp, path).map_err(write)?;
        // The rename itself is durable once the directory is synced.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn device(id: &str) -> Device {
        Device {
            id: id.into(),
            tenant: "fabrikam".into(),
            building: "b0001".into(),
            floor: Some("2".into()),
            room: Some("2-05".into()),
            key: "MDEyMzQ1Njc4OWFiY2RlZg==".into(),
        }
    }

    #[test]
    fn upsert_validates_everything_before_storing_anything() {
        let registry = Registry::in_memory();
        let mut bad = device("d2");
        bad.building = "b/1".into();
        let err = registry.upsert(vec![device("d1"), bad]).unwrap_err();
        assert!(err.to_string().contains("device 1: building"), "{err}");
        assert!(registry.is_empty());
        let mut short = device("d3");
        short.key = "c2hvcnQ=".into();
        let err = registry.upsert(vec![short]).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        let err = registry
            .upsert(vec![device("d1"), device("d1")])
            .unwrap_err();
        assert!(matches!(err, RegistryError::Duplicate { index: 1, .. }));
    }

    #[test]
    fn the_file_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry/devices.json");
        let registry = Registry::open(&path).unwrap();
        registry.upsert(vec![device("d1"), device("d2")]).unwrap();
        let mut moved = device("d1");
        moved.building = "b0002".into();
        registry.upsert(vec![moved.clone()]).unwrap();
        drop(registry);
        let reopened = Registry::open(&path).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(*reopened.get("d1").unwrap(), moved);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Registry::open(&path),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
