//! The topics a device may publish and subscribe to.
//!
//! | topic                                                  | meaning                               |
//! |--------------------------------------------------------|---------------------------------------|
//! | `weir/telemetry`                                       | weir JSON readings (as `/v1/telemetry`) |
//! | `weir/senml`                                           | a SenML JSON pack (as `/v1/senml`)    |
//! | `devices/{id}/messages/events/{property bag}`          | an IoT Hub device-to-cloud message    |
//! | `$iothub/twin/GET/?$rid={rid}`                         | IoT Hub: the device asks for its twin |
//! | `$iothub/twin/PATCH/properties/reported/?$rid={rid}`   | IoT Hub: reported properties, stored  |
//!
//! The gateway publishes to the device: twin documents on `$iothub/twin/res/{status}/?$rid=…`
//! (answers to the two above), and desired-property patches on
//! `$iothub/twin/PATCH/properties/desired/?$version={n}` as they are set through the API.
//!
//! Subscriptions the IoT Hub SDKs make on connect are granted, for the device's own id only:
//! `devices/{id}/messages/devicebound/#`, `$iothub/twin/res/#`,
//! `$iothub/twin/PATCH/properties/desired/#` and `$iothub/methods/POST/#`.

/// What a PUBLISH's topic asks for.
#[derive(Debug, PartialEq)]
pub enum Route<'a> {
    WeirJson,
    WeirSenml,
    /// `device` as the topic names it, and the (still URL-encoded) property bag.
    IotHubEvents {
        device: &'a str,
        bag: &'a str,
    },
    TwinGet {
        rid: &'a str,
    },
    TwinReported {
        rid: &'a str,
    },
}

pub fn route(topic: &str) -> Option<Route<'_>> {
    match topic {
        "weir/telemetry" => return Some(Route::WeirJson),
        "weir/senml" => return Some(Route::WeirSenml),
        _ => {}
    }
    if let Some(rest) = topic.strip_prefix("devices/") {
        let (device, rest) = rest.split_once('/')?;
        let bag = rest.strip_prefix("messages/events")?;
        let bag = match bag {
            "" => "",
            _ => bag.strip_prefix('/')?,
        };
        return Some(Route::IotHubEvents { device, bag });
    }
    if let Some(query) = topic.strip_prefix("$iothub/twin/GET/?") {
        return Some(Route::TwinGet { rid: rid(query)? });
    }
    if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return Some(Route::TwinReported { rid: rid(query)? });
    }
    None
}

fn rid(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("$rid="))
        .filter(|r| !r.is_empty() && r.len() <= 64)
}

/// Where IoT Hub devices listen for desired-property patches.
pub const DESIRED_PATCHES: &str = "$iothub/twin/PATCH/properties/desired/#";

/// Whether `device` may subscribe to `filter`.
pub fn may_subscribe(device: &str, filter: &str) -> bool {
    if let Some(rest) = filter.strip_prefix("devices/") {
        return rest
            .strip_prefix(device)
            .is_some_and(|r| r == "/messages/devicebound/#");
    }
    matches!(
        filter,
        "$iothub/twin/res/#" | DESIRED_PATCHES | "$iothub/methods/POST/#"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_topics_route() {
        assert_eq!(route("weir/telemetry"), Some(Route::WeirJson));
        assert_eq!(
            route("devices/d1/messages/events/%24.ct=application%2Fjson&a=b"),
            Some(Route::IotHubEvents {
                device: "d1",
                bag: "%24.ct=application%2Fjson&a=b"
            })
        );
        assert_eq!(
            route("devices/d1/messages/events/"),
            Some(Route::IotHubEvents {
                device: "d1",
                bag: ""
            })
        );
        assert_eq!(
            route("devices/d1/messages/events"),
            Some(Route::IotHubEvents {
                device: "d1",
                bag: ""
            })
        );
        assert_eq!(
            route("$iothub/twin/GET/?$rid=7"),
            Some(Route::TwinGet { rid: "7" })
        );
        assert_eq!(
            route("$iothub/twin/PATCH/properties/reported/?$rid=8&$version=2"),
            Some(Route::TwinReported { rid: "8" })
        );
        for bad in [
            "weir",
            "devices/d1/messages/eventsX",
            "devices/",
            "a/b",
            "$iothub/twin/GET/?",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn devices_subscribe_to_their_own_topics_only() {
        assert!(may_subscribe("d1", "devices/d1/messages/devicebound/#"));
        assert!(may_subscribe("d1", "$iothub/twin/res/#"));
        assert!(!may_subscribe("d1", "devices/d2/messages/devicebound/#"));
        assert!(!may_subscribe("d1", "devices/d12/messages/devicebound/#"));
        assert!(!may_subscribe("d1", "#"));
        assert!(!may_subscribe("d1", "weir/telemetry"));
    }
}
