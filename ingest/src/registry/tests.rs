use super::*;

pub fn new_device(id: &str, building: &str) -> NewDevice {
    NewDevice {
        id: id.into(),
        building: building.into(),
        floor: Some("2".into()),
        room: Some("2-05".into()),
        ..NewDevice::default()
    }
}

async fn with_tenant(registry: &Registry, tenant: &str) -> String {
    registry.create_tenant(tenant, "Test").await.unwrap().1
}

#[tokio::test]
async fn tenants_are_found_by_their_api_keys_only() {
    let registry = Registry::in_memory();
    let key = with_tenant(&registry, "fabrikam").await;
    assert!(key.starts_with(secrets::TENANT_KEY_PREFIX));
    assert_eq!(registry.tenant_by_api_key(&key).unwrap().id, "fabrikam");
    assert!(registry.tenant_by_api_key("wtk_nope").is_none());
    let err = registry
        .create_tenant("fabrikam", "again")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Exists { .. }), "{err}");
    // Rotation voids the old key of that slot.
    let new = registry
        .rotate_tenant_key("fabrikam", KeySlot::Primary)
        .await
        .unwrap();
    assert!(registry.tenant_by_api_key(&key).is_none());
    assert_eq!(registry.tenant_by_api_key(&new).unwrap().id, "fabrikam");
}

#[tokio::test]
async fn import_is_all_or_nothing_and_names_the_bad_item() {
    let registry = Registry::in_memory();
    with_tenant(&registry, "fabrikam").await;
    let mut bad = new_device("d2", "b0001");
    bad.floor = Some("2/3".into());
    let err = registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b0001"), bad],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("item 1: floor"), "{err}");
    assert!(registry.is_empty());
    // Without create_buildings, a building must exist.
    let err = registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b0001")],
            ImportMode::Create,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("building `b0001` does not exist"),
        "{err}"
    );
    let devices = registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b0001"), new_device("d2", "b0001")],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].state, DeviceState::Enabled);
    assert_ne!(devices[0].keys.primary, devices[1].keys.primary);
    assert!(registry.building("fabrikam", "b0001").is_some());
    // Creating an existing device fails; upserting keeps its keys.
    let err = registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b0001")],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`d1` already exists"), "{err}");
    let again = registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b0001")],
            ImportMode::Upsert,
            true,
        )
        .await
        .unwrap();
    assert_eq!(again[0].keys, devices[0].keys);
    assert_eq!(again[0].version, 2);
}

#[tokio::test]
async fn another_tenants_devices_are_invisible() {
    let registry = Registry::in_memory();
    with_tenant(&registry, "fabrikam").await;
    with_tenant(&registry, "contoso").await;
    registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b1")],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    assert!(registry.device("contoso", "d1").is_none());
    assert!(registry.device("fabrikam", "d1").is_some());
    for result in [
        registry
            .set_state("contoso", "d1", DeviceState::Disabled)
            .await,
        registry
            .rotate_device_key("contoso", "d1", KeySlot::Primary)
            .await,
    ] {
        assert!(matches!(result, Err(RegistryError::NotFound { .. })));
    }
    assert!(registry.delete_device("contoso", "d1").await.is_err());
    // Taking over an id held by another tenant is refused even in upsert mode.
    let err = registry
        .import_devices(
            "contoso",
            vec![new_device("d1", "b1")],
            ImportMode::Upsert,
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Item { .. }), "{err}");
    assert_eq!(registry.get("d1").unwrap().tenant, "fabrikam");
    let (page, _) = registry.list_devices("contoso", &DeviceFilter::default(), None, 10);
    assert!(page.is_empty());
}

#[tokio::test]
async fn listings_page_in_id_order_with_filters() {
    let registry = Registry::in_memory();
    with_tenant(&registry, "fabrikam").await;
    let devices = (0..25)
        .map(|i| new_device(&format!("d{i:02}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    registry
        .import_devices("fabrikam", devices, ImportMode::Create, true)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, next) =
            registry.list_devices("fabrikam", &DeviceFilter::default(), after.as_deref(), 10);
        seen.extend(page.iter().map(|d| d.id.clone()));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let filter = DeviceFilter {
        building: Some("odd".into()),
        ..DeviceFilter::default()
    };
    let (odd, next) = registry.list_devices("fabrikam", &filter, None, 100);
    assert_eq!(odd.len(), 12);
    assert!(next.is_none());
}

#[tokio::test]
async fn updates_check_versions_places_and_revocation() {
    let registry = Registry::in_memory();
    with_tenant(&registry, "fabrikam").await;
    registry
        .put_building(Building {
            tenant: "fabrikam".into(),
            id: "b1".into(),
            name: "HQ".into(),
            floors: [("2".to_string(), vec!["2-05".to_string()])].into(),
        })
        .await
        .unwrap();
    registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b1")],
            ImportMode::Create,
            false,
        )
        .await
        .unwrap();
    let moved = registry
        .update_device(
            "fabrikam",
            "d1",
            DevicePatch {
                room: Some(Some("2-06".into())),
                ..DevicePatch::default()
            },
            None,
        )
        .await;
    assert!(
        moved
            .unwrap_err()
            .to_string()
            .contains("`2-06` is not a room")
    );
    let stale = registry
        .update_device("fabrikam", "d1", DevicePatch::default(), Some(7))
        .await
        .unwrap_err();
    assert!(matches!(
        stale,
        RegistryError::VersionMismatch {
            expected: 7,
            actual: 1
        }
    ));
    let revoked = registry
        .set_state("fabrikam", "d1", DeviceState::Revoked)
        .await
        .unwrap();
    assert!(!revoked.may_send());
    let err = registry
        .set_state("fabrikam", "d1", DeviceState::Enabled)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked, which is final"), "{err}");
    // The floor plan cannot drop a room a device is in.
    let err = registry
        .put_building(Building {
            tenant: "fabrikam".into(),
            id: "b1".into(),
            name: "HQ".into(),
            floors: [("3".to_string(), vec![])].into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
}

#[tokio::test]
async fn the_log_survives_a_restart_and_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry/changes.jsonl");
    let key = {
        let registry = Registry::open(&path).unwrap();
        let key = with_tenant(&registry, "fabrikam").await;
        registry
            .import_devices(
                "fabrikam",
                vec![new_device("d1", "b1"), new_device("d2", "b1")],
                ImportMode::Create,
                true,
            )
            .await
            .unwrap();
        registry.delete_device("fabrikam", "d2").await.unwrap();
        registry
            .set_state("fabrikam", "d1", DeviceState::Disabled)
            .await
            .unwrap();
        key
    };
    // A crash in the middle of an append.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"key\":\"device/d3\",\"val");
    std::fs::write(&path, text).unwrap();
    let registry = Registry::open(&path).unwrap();
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.get("d1").unwrap().state, DeviceState::Disabled);
    assert_eq!(registry.tenant_by_api_key(&key).unwrap().id, "fabrikam");
    // The torn line is gone, so appending goes on cleanly.
    registry
        .import_devices(
            "fabrikam",
            vec![new_device("d4", "b1")],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    drop(registry);
    assert_eq!(Registry::open(&path).unwrap().len(), 2);
    // Damage before the last line is not a torn write: refuse to guess.
    std::fs::write(&path, "{not json\n{}\n").unwrap();
    assert!(matches!(
        Registry::open(&path),
        Err(RegistryError::Corrupt { line: 1, .. })
    ));
}

#[tokio::test]
async fn a_change_through_one_registry_reaches_another_over_the_bus() {
    let bus: Arc<dyn weir_common::bus::Bus> = Arc::new(weir_common::bus::MemoryBus::default());
    conformance::changes_reach_every_registry(bus, "registry").await;
}

#[tokio::test]
async fn racing_changes_from_another_writer_cannot_undo_the_rules() {
    let registry = Registry::in_memory();
    with_tenant(&registry, "fabrikam").await;
    registry
        .import_devices(
            "fabrikam",
            vec![new_device("d1", "b1")],
            ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    let current = registry.get("d1").unwrap();
    let put = |device: Device| Change::put(Entity::Device(device));
    // Another tenant's creation of the same id, arriving through a shared log.
    let mut stolen = (*current).clone();
    stolen.tenant = "contoso".into();
    stolen.version += 1;
    assert!(!registry.apply(put(stolen)));
    // A stale update, made from an older view.
    let mut stale = (*current).clone();
    stale.room = Some("9-99".into());
    assert!(!registry.apply(put(stale)));
    // Revoked, then an older writer's enable.
    let revoked = registry
        .set_state("fabrikam", "d1", DeviceState::Revoked)
        .await
        .unwrap();
    let mut enable = (*revoked).clone();
    enable.state = DeviceState::Enabled;
    enable.version += 1;
    assert!(!registry.apply(put(enable)));
    assert_eq!(registry.get("d1").unwrap().state, DeviceState::Revoked);
    assert_eq!(registry.get("d1").unwrap().tenant, "fabrikam");
    // A second creation of a tenant.
    let mut again = (*registry.tenant("fabrikam").unwrap()).clone();
    again.created_us += 1;
    again.api_key_hashes = vec!["0".repeat(64)];
    assert!(!registry.apply(Change::put(Entity::Tenant(again))));
}
