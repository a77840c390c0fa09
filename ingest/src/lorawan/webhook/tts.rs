//! The Things Stack v3 `uplink_message` webhook bodies (see the field mapping
//! in the parent module).

use super::json::{Cx, Object, Reception, best, distinct_gateways, get};
use super::{Network, Uplink, WebhookError};

pub(super) fn parse(cx: Cx, root: &Object) -> Result<Uplink, WebhookError> {
    let ids = cx.object(
        cx.required(root, "end_device_ids", "end_device_ids")?,
        "end_device_ids",
    )?;
    let dev_eui = cx.dev_eui(
        cx.required(ids, "dev_eui", "end_device_ids.dev_eui")?,
        "end_device_ids.dev_eui",
    )?;
    // Other message types (join_accept, downlink_ack, ...) share the envelope
    // but lack this object.
    let up = cx.object(
        cx.required(root, "uplink_message", "uplink_message")?,
        "uplink_message",
    )?;

    let f_port = cx.f_port(get(up, "f_port"), "uplink_message.f_port")?;
    let payload = cx.base64_payload(get(up, "frm_payload"), "uplink_message.frm_payload")?;
    let f_cnt = match get(up, "f_cnt") {
        Some(v) => cx.narrow(v, "uplink_message.f_cnt", u32::MAX.into())?,
        None => 0,
    };
    let time_us = match get(up, "received_at") {
        Some(v) => Some(cx.timestamp_us(v, "uplink_message.received_at")?),
        None => cx.optional_timestamp_us(get(root, "received_at"), "received_at")?,
    };

    let receptions = receptions(cx, up)?;
    let gateways = distinct_gateways(&receptions);
    let top = best(receptions).unwrap_or_default();

    const SF: &str = "uplink_message.settings.data_rate.lora.spreading_factor";
    let spreading_factor = cx
        .lookup(
            up,
            &["settings", "data_rate", "lora", "spreading_factor"],
            SF,
        )?
        .map(|v| cx.narrow(v, SF, 255))
        .transpose()?;
    const FREQUENCY: &str = "uplink_message.settings.frequency";
    let frequency_hz = cx
        .lookup(up, &["settings", "frequency"], FREQUENCY)?
        .map(|v| cx.unsigned(v, FREQUENCY))
        .transpose()?;

    Ok(Uplink {
        network: Network::TheThingsStack,
        dev_eui,
        f_cnt,
        f_port,
        payload,
        time_us,
        rssi: top.rssi,
        snr: top.snr,
        gateway: top.gateway,
        gateways,
        spreading_factor,
        frequency_hz,
    })
}

/// The `rx_metadata[]` list: one entry per antenna of each receiving gateway.
fn receptions(cx: Cx, up: &Object) -> Result<Vec<Reception>, WebhookError> {
    let Some(list) = get(up, "rx_metadata") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in cx.array(list, "uplink_message.rx_metadata")? {
        let entry = cx.object(entry, "uplink_message.rx_metadata[]")?;
        const GATEWAY_ID: &str = "uplink_message.rx_metadata[].gateway_ids.gateway_id";
        const GATEWAY_EUI: &str = "uplink_message.rx_metadata[].gateway_ids.eui";
        // When no gateway id is given, the gateway EUI still identifies it.
        let id = cx.lookup(entry, &["gateway_ids", "gateway_id"], GATEWAY_ID)?;
        let gateway = match id {
            Some(id) => Some(cx.string(id, GATEWAY_ID)?.to_owned()),
            None => {
                let eui = cx.lookup(entry, &["gateway_ids", "eui"], GATEWAY_EUI)?;
                cx.optional_string(eui, GATEWAY_EUI)?
            }
        };
        // Some gateways only report the channel RSSI.
        let rssi = match get(entry, "rssi") {
            Some(v) => Some(cx.float(v, "uplink_message.rx_metadata[].rssi")?),
            None => cx.optional_float(
                get(entry, "channel_rssi"),
                "uplink_message.rx_metadata[].channel_rssi",
            )?,
        };
        let snr = cx.optional_float(get(entry, "snr"), "uplink_message.rx_metadata[].snr")?;
        out.push(Reception { gateway, rssi, snr });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::json::testing::{any_json, replace};
    use super::super::{Network, Uplink, WebhookError, parse};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    // Source: The Things Stack documentation, "Data Formats", "Uplink message
    // example", verbatim. Note that it has no `f_port`, although the format
    // description above it lists `"f_port": 1`.
    const DOCS_UPLINK: &str = r#"{
      "end_device_ids" : {
        "device_id" : "dev1",
        "application_ids" : {
          "application_id" : "app1"
        },
        "dev_eui" : "0004A30B001C0530",
        "join_eui" : "800000000000000C",
        "dev_addr" : "00BCB929"
      },
      "correlation_ids" : [
        "as:up:01E0WZGT6Y7657CPFPE5WEYDSQ",
        "gs:conn:01E0WDEC6T5T4XXBAX7S1VMFKE",
        "gs:uplink:01E0WZGSZWT07NE5TS2APTV1Z9",
        "ns:uplink:01E0WZGSZXZXZS8RFAWZX0F2FY",
        "rpc:/ttn.lorawan.v3.GsNs/HandleUplink:01E0WZGSZXGE1KS577PFBWRJEE"
      ],
      "received_at" : "2020-02-12T15:15:46.014773143Z",
      "uplink_message" : {
        "session_key_id" : "AXA50tHUGUucuzS/bCGMNw==",
        "f_cnt" : 1,
        "frm_payload" : "gkHe",
        "decoded_payload" : {
          "temperature": 1.0,
          "luminosity": 0.64
        },
        "rx_metadata" : [ {
          "gateway_ids" : {
            "gateway_id" : "gtw1",
            "eui" : "9C5C8E00001A05C4"
          },
          "time" : "2020-02-12T15:15:45.787Z",
          "timestamp" : 2463457000,
          "rssi" : -35,
          "channel_rssi" : -35,
          "snr" : 5,
          "uplink_token" : "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
          "channel_index" : 2
        } ],
        "settings" : {
          "data_rate" : {
            "lora" : {
              "bandwidth" : 125000,
              "spreading_factor" : 7
            }
          },
          "data_rate_index" : 5,
          "coding_rate" : "4/6",
          "frequency" : "868300000",
          "timestamp" : 2463457000,
          "time" : "2020-02-12T15:15:45.787Z"
        },
        "consumed_airtime": "0.056576s",
        "locations": {
          "user": {
            "latitude": 37.97155556731436,
            "longitude": 23.72678801175413,
            "altitude": 10,
            "source": "SOURCE_REGISTRY"
          }
        },
        "received_at" : "2020-02-12T15:15:45.789585559Z"
      }
    }"#;

    /// The documentation example with the `f_port` its format description shows.
    fn docs_body() -> Value {
        let mut body: Value = serde_json::from_str(DOCS_UPLINK).unwrap();
        body["uplink_message"]["f_port"] = json!(1);
        body
    }

    fn parse_value(body: &Value) -> Result<Uplink, WebhookError> {
        parse(Network::TheThingsStack, body.to_string().as_bytes())
    }

    #[test]
    fn docs_example() {
        let up = parse_value(&docs_body()).unwrap();
        assert_eq!(
            up,
            Uplink {
                network: Network::TheThingsStack,
                dev_eui: "0004a30b001c0530".into(),
                f_cnt: 1,
                f_port: 1,
                payload: vec![0x82, 0x41, 0xDE],
                time_us: Some(1_581_520_545_789_585),
                rssi: Some(-35.0),
                snr: Some(5.0),
                gateway: Some("gtw1".into()),
                gateways: 1,
                spreading_factor: Some(7),
                frequency_hz: Some(868_300_000),
            }
        );
    }

    // The verbatim example has no f_port; The Things Stack omits zero-valued
    // fields, so that reads as port 0 and the frame has no application data.
    #[test]
    fn verbatim_docs_example_lacks_a_port() {
        assert_eq!(
            parse(Network::TheThingsStack, DOCS_UPLINK.as_bytes()),
            Err(WebhookError::NoApplicationData {
                network: Network::TheThingsStack,
                field: "uplink_message.f_port",
                reason: "is absent, so the frame is MAC-only"
            })
        );
    }

    // Derived from the documentation example: a second gateway with two
    // antennas, one of them stronger than gtw1, and an omitted (zero) f_cnt.
    #[test]
    fn best_of_several_gateways() {
        let mut body = docs_body();
        body["uplink_message"]
            .as_object_mut()
            .unwrap()
            .remove("f_cnt");
        body["uplink_message"]["rx_metadata"]
            .as_array_mut()
            .unwrap()
            .extend([
                json!({"gateway_ids": {"gateway_id": "gtw2"}, "rssi": -30, "snr": 7.25}),
                json!({"gateway_ids": {"gateway_id": "gtw2"}, "channel_rssi": -50, "snr": 2}),
            ]);
        let up = parse_value(&body).unwrap();
        assert_eq!(up.f_cnt, 0);
        assert_eq!(
            (up.gateway.as_deref(), up.rssi, up.snr, up.gateways),
            (Some("gtw2"), Some(-30.0), Some(7.25), 2)
        );
    }

    #[test]
    fn falls_back_to_envelope_time_and_gateway_eui() {
        let mut body = docs_body();
        body["uplink_message"]
            .as_object_mut()
            .unwrap()
            .remove("received_at");
        body["uplink_message"]["rx_metadata"][0]["gateway_ids"]
            .as_object_mut()
            .unwrap()
            .remove("gateway_id");
        let up = parse_value(&body).unwrap();
        assert_eq!(up.time_us, Some(1_581_520_546_014_773));
        assert_eq!(up.gateway.as_deref(), Some("9C5C8E00001A05C4"));
    }

    #[test]
    fn other_message_types_are_refused() {
        let mut body = docs_body();
        let uplink = body
            .as_object_mut()
            .unwrap()
            .remove("uplink_message")
            .unwrap();
        body["join_accept"] = uplink;
        assert_eq!(
            parse_value(&body),
            Err(WebhookError::MissingField {
                network: Network::TheThingsStack,
                field: "uplink_message"
            })
        );
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut body = docs_body();
        body["uplink_message"]["frm_payload"] = json!("gk*e");
        let err = parse_value(&body).unwrap_err();
        assert!(
            err.to_string().starts_with("tts webhook field `uplink_message.frm_payload` has invalid value \"gk*e\": invalid base64"),
            "{err}"
        );
        let mut body = docs_body();
        body["uplink_message"]["settings"]["data_rate"] = json!("SF7BW125");
        assert_eq!(
            parse_value(&body).unwrap_err().to_string(),
            "tts webhook field `uplink_message.settings.data_rate.lora.spreading_factor` has invalid value \"SF7BW125\": \
             `data_rate` on the way to this field is not an object"
        );
        let mut body = docs_body();
        body["uplink_message"]["f_port"] = json!(224);
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::NoApplicationData { .. })
        ));
        let mut body = docs_body();
        body["end_device_ids"]
            .as_object_mut()
            .unwrap()
            .remove("dev_eui");
        assert_eq!(
            parse_value(&body),
            Err(WebhookError::MissingField {
                network: Network::TheThingsStack,
                field: "end_device_ids.dev_eui"
            })
        );
    }

    proptest! {
        #[test]
        fn any_field_replaced_by_any_value_never_panics(
            path in prop::sample::select(vec![
                vec!["end_device_ids"],
                vec!["end_device_ids", "dev_eui"],
                vec!["uplink_message"],
                vec!["uplink_message", "f_port"],
                vec!["uplink_message", "f_cnt"],
                vec!["uplink_message", "frm_payload"],
                vec!["uplink_message", "received_at"],
                vec!["received_at"],
                vec!["uplink_message", "rx_metadata"],
                vec!["uplink_message", "rx_metadata", "0"],
                vec!["uplink_message", "rx_metadata", "0", "gateway_ids"],
                vec!["uplink_message", "rx_metadata", "0", "rssi"],
                vec!["uplink_message", "rx_metadata", "0", "snr"],
                vec!["uplink_message", "settings"],
                vec!["uplink_message", "settings", "data_rate", "lora"],
                vec!["uplink_message", "settings", "data_rate", "lora", "spreading_factor"],
                vec!["uplink_message", "settings", "frequency"],
            ]),
            replacement in any_json(),
        ) {
            let mut body = docs_body();
            replace(&mut body, &path, replacement);
            let _ = parse_value(&body);
        }
    }
}
