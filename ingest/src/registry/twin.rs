//! The property documents of device twins, as Azure IoT Hub keeps them: `desired` properties
//! a tenant sets through the API and the device receives, and `reported` properties the device
//! sets (firmware version, configuration it applied). Each document has its own `$version`,
//! which grows by one with every change: optimistic concurrency for the API (`If-Match`), and
//! what a device compares to know whether it missed a patch.
//!
//! Changes are JSON merge patches (RFC 7386): members of the patch replace those of the
//! document, objects merge recursively, and `null` removes a member. Documents are kept with
//! the device in the registry, so they are as durable as the device and reach every gateway
//! the same way (which is how a gateway holding the device's MQTT connection hears of them).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Device, Registry, RegistryError};

/// Largest document, serialised (IoT Hub's limit for each of desired and reported).
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// Deepest nesting of objects in a document (IoT Hub's limit).
pub const MAX_DEPTH: usize = 10;

/// A versioned property document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// As IoT Hub numbers them: 1 for the empty document a device starts with (stored as 0
    /// until the first change), then one more with every change. Use [`Properties::version`].
    #[serde(rename = "version")]
    changes: u64,
    pub properties: Map<String, Value>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.changes == 0 && self.properties.is_empty()
    }

    /// `$version`: what `If-Match` names, what `ETag` says, and what patches carry.
    pub fn version(&self) -> u64 {
        self.changes.max(1)
    }

    /// The document as IoT Hub shows it: the properties and their `$version`.
    pub fn to_iothub(&self) -> Value {
        let mut doc = self.properties.clone();
        doc.insert("$version".into(), Value::from(self.version()));
        Value::Object(doc)
    }

    /// Applies a merge patch (or replaces everything), checks the result, and moves the
    /// version on.
    fn change(&mut self, patch: Map<String, Value>, replace: bool) -> Result<(), RegistryError> {
        check_members(&patch, 1)?;
        let mut properties = if replace {
            Map::new()
        } else {
            self.properties.clone()
        };
        merge(&mut properties, patch);
        let size = serde_json::to_vec(&properties).map_or(usize::MAX, |v| v.len());
        if size > MAX_DOCUMENT_BYTES {
            return Err(RegistryError::Invalid {
                field: "properties",
                reason: format!("the document would be {size} bytes; at most {MAX_DOCUMENT_BYTES}"),
            });
        }
        self.properties = properties;
        self.changes = self.version() + 1;
        Ok(())
    }
}

/// The desired and reported properties of a device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinProperties {
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub desired: Properties,
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub reported: Properties,
}

impl TwinProperties {
    pub fn is_empty(&self) -> bool {
        self.desired.is_empty() && self.reported.is_empty()
    }
}

/// RFC 7386: `patch` into `target`.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge(slot, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

/// IoT Hub's rules for property names: no `$` (reserved for metadata such as `$version`), no
/// `.` and no space; and not too deep.
fn check_members(members: &Map<String, Value>, depth: usize) -> Result<(), RegistryError> {
    if depth > MAX_DEPTH {
        return Err(RegistryError::Invalid {
            field: "properties",
            reason: format!("objects nest deeper than {MAX_DEPTH} levels"),
        });
    }
    for (key, value) in members {
        if key.is_empty() || key.len() > 512 || key.contains(['$', '.', ' ']) {
            return Err(RegistryError::Invalid {
                field: "properties",
                reason: format!(
                    "property name `{key}` must be 1 to 512 bytes without `$`, `.` or spaces"
                ),
            });
        }
        if let Value::Object(inner) = value {
            check_members(inner, depth + 1)?;
        }
    }
    Ok(())
}

/// The members of `new` that differ from `old`, and `null` for those `old` had and `new` has
/// not: the merge patch that takes a device from what it was sent to what is desired now.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(Value::Object(was)), Value::Object(now)) => {
                let inner = diff(was, now);
                if !inner.is_empty() {
                    patch.insert(key.clone(), Value::Object(inner));
                }
            }
            (Some(was), now) if was == now => {}
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

/// Which document a change is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Set through the API.
    Desired,
    /// Set by the device.
    Reported,
}

impl Registry {
    /// Changes one property document of a device of `tenant`: a merge patch, or a whole new
    /// document when `replace`. With `if_version`, only if the document is at that version
    /// (`RegistryError::VersionMismatch` otherwise, which the API answers with 412).
    pub async fn change_twin(
        &self,
        tenant: &str,
        id: &str,
        side: Side,
        patch: Map<String, Value>,
        replace: bool,
        if_version: Option<u64>,
    ) -> Result<std::sync::Arc<Device>, RegistryError> {
        self.change_device(tenant, id, None, |device| {
            let doc = match side {
                Side::Desired => &mut device.twin.desired,
                Side::Reported => &mut device.twin.reported,
            };
            if let Some(expected) = if_version
                && expected != doc.version()
            {
                return Err(RegistryError::VersionMismatch {
                    expected,
                    actual: doc.version(),
                });
            }
            doc.change(patch, replace)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn patches_merge_as_rfc_7386_says() {
        // The example of RFC 7386, section 3.
        let mut doc = Properties {
            changes: 0,
            properties: object(json!({
                "title": "Goodbye!",
                "author": {"givenName": "John", "familyName": "Doe"},
                "tags": ["example", "sample"],
                "content": "This will be unchanged"
            })),
        };
        let patch = object(json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        }));
        doc.change(patch, false).unwrap();
        assert_eq!(
            Value::Object(doc.properties.clone()),
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
        assert_eq!(doc.version(), 2, "the empty document was version 1");
        assert_eq!(doc.to_iothub()["$version"], 2);
    }

    #[test]
    fn reserved_names_and_oversized_documents_are_refused() {
        let mut doc = Properties::default();
        for bad in [
            json!({"$version": 3}),
            json!({"a.b": 1}),
            json!({"x": {"has space": 1}}),
        ] {
            let error = doc.change(object(bad), false).unwrap_err().to_string();
            assert!(error.contains("property name"), "{error}");
        }
        let big = json!({"blob": "x".repeat(MAX_DOCUMENT_BYTES)});
        assert!(
            doc.change(object(big), false)
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!({ "d": deep });
        }
        assert!(
            doc.change(object(deep), false)
                .unwrap_err()
                .to_string()
                .contains("nest")
        );
        assert_eq!(doc, Properties::default(), "nothing changed");
    }

    #[test]
    fn a_diff_applied_as_a_patch_gives_the_new_document() {
        let old = object(json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true}));
        let new = object(json!({"a": 1, "b": {"c": 4, "d": 3}, "added": [1]}));
        let patch = diff(&old, &new);
        assert_eq!(
            Value::Object(patch.clone()),
            json!({"b": {"c": 4}, "gone": null, "added": [1]})
        );
        let mut merged = old.clone();
        merge(&mut merged, patch);
        assert_eq!(merged, new);
    }
}
