//! ChirpStack v4 `up` events in the JSON encoding of the HTTP integration (see
//! the field mapping in the parent module).

use super::json::{Cx, Object, Reception, best, distinct_gateways, get};
use super::{Network, Uplink, WebhookError};

pub(super) fn parse(cx: Cx, root: &Object) -> Result<Uplink, WebhookError> {
    let dev_eui = match cx.lookup(root, &["deviceInfo", "devEui"], "deviceInfo.devEui")? {
        Some(v) => cx.dev_eui(v, "deviceInfo.devEui")?,
        None => {
            return Err(WebhookError::MissingField {
                network: Network::ChirpStack,
                field: "deviceInfo.devEui",
            });
        }
    };
    let f_port = cx.f_port(get(root, "fPort"), "fPort")?;
    let payload = cx.base64_payload(get(root, "data"), "data")?;
    let f_cnt = match get(root, "fCnt") {
        Some(v) => cx.narrow(v, "fCnt", u32::MAX.into())?,
        None => 0,
    };
    let time_us = cx.optional_timestamp_us(get(root, "time"), "time")?;

    let receptions = receptions(cx, root)?;
    let gateways = distinct_gateways(&receptions);
    let top = best(receptions).unwrap_or_default();

    const SF: &str = "txInfo.modulation.lora.spreadingFactor";
    let spreading_factor = cx
        .lookup(
            root,
            &["txInfo", "modulation", "lora", "spreadingFactor"],
            SF,
        )?
        .map(|v| cx.narrow(v, SF, 255))
        .transpose()?;
    let frequency_hz = cx
        .lookup(root, &["txInfo", "frequency"], "txInfo.frequency")?
        .map(|v| cx.unsigned(v, "txInfo.frequency"))
        .transpose()?;

    Ok(Uplink {
        network: Network::ChirpStack,
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

/// The `rxInfo[]` list of receiving gateways.
fn receptions(cx: Cx, root: &Object) -> Result<Vec<Reception>, WebhookError> {
    let Some(list) = get(root, "rxInfo") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in cx.array(list, "rxInfo")? {
        let entry = cx.object(entry, "rxInfo[]")?;
        out.push(Reception {
            gateway: cx.optional_string(get(entry, "gatewayId"), "rxInfo[].gatewayId")?,
            rssi: cx.optional_float(get(entry, "rssi"), "rxInfo[].rssi")?,
            snr: cx.optional_float(get(entry, "snr"), "rxInfo[].snr")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::json::testing::{any_json, replace};
    use super::super::{Network, Uplink, WebhookError, parse};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    // Source: ChirpStack v4 documentation, "Event types", `up` - Uplink event,
    // JSON example, verbatim. fCnt is absent: ChirpStack omits zero values.
    const DOCS_UP: &str = r#"{
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2022-07-18T09:34:15.775023242+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
            "applicationName": "Test application",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": "Test device-profile",
            "deviceName": "Test device",
            "devEui": "0101010101010101",
            "tags": {
                "key": "value"
            }
        },
        "devAddr": "00189440",
        "dr": 1,
        "fPort": 1,
        "data": "qg==",
        "rxInfo": [{
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217106255,
            "rssi": -36,
            "snr": 10.5,
            "context": "E3OWOQ==",
            "metadata": {
                "region_name": "eu868",
                "region_common_name": "EU868"
            }
        }],
        "txInfo": {
            "frequency": 867100000,
            "modulation": {
                "lora": {
                    "bandwidth": 125000,
                    "spreadingFactor": 11,
                    "codeRate": "CR_4_5"
                }
            }
        }
    }"#;

    fn docs_body() -> Value {
        serde_json::from_str(DOCS_UP).unwrap()
    }

    fn parse_value(body: &Value) -> Result<Uplink, WebhookError> {
        parse(Network::ChirpStack, body.to_string().as_bytes())
    }

    #[test]
    fn docs_example() {
        assert_eq!(
            parse(Network::ChirpStack, DOCS_UP.as_bytes()).unwrap(),
            Uplink {
                network: Network::ChirpStack,
                dev_eui: "0101010101010101".into(),
                f_cnt: 0,
                f_port: 1,
                payload: vec![0xAA],
                time_us: Some(1_658_136_855_775_023),
                rssi: Some(-36.0),
                snr: Some(10.5),
                gateway: Some("0016c001f153a14c".into()),
                gateways: 1,
                spreading_factor: Some(11),
                frequency_hz: Some(867_100_000),
            }
        );
    }

    // Derived from the documentation example: a frame counter, and a second,
    // stronger gateway.
    #[test]
    fn best_of_two_gateways() {
        let mut body = docs_body();
        body["fCnt"] = json!(4321);
        body["rxInfo"]
            .as_array_mut()
            .unwrap()
            .push(json!({"gatewayId": "0016c001f1500812", "rssi": -20, "snr": 9}));
        let up = parse_value(&body).unwrap();
        assert_eq!(up.f_cnt, 4321);
        assert_eq!(
            (up.gateway.as_deref(), up.rssi, up.snr, up.gateways),
            (Some("0016c001f1500812"), Some(-20.0), Some(9.0), 2)
        );
    }

    #[test]
    fn mac_only_frame_is_refused() {
        let mut body = docs_body();
        body.as_object_mut().unwrap().remove("fPort");
        body.as_object_mut().unwrap().remove("data");
        let err = parse_value(&body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chirpstack uplink carries no application data: `fPort` is absent, so the frame is MAC-only"
        );
        let mut body = docs_body();
        body.as_object_mut().unwrap().remove("data");
        assert_eq!(
            parse_value(&body),
            Err(WebhookError::NoApplicationData {
                network: Network::ChirpStack,
                field: "data",
                reason: "is absent"
            })
        );
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut body = docs_body();
        body["deviceInfo"]["devEui"] = json!("AQEBAQEBAQE=");
        assert_eq!(
            parse_value(&body).unwrap_err().to_string(),
            "chirpstack webhook field `deviceInfo.devEui` has invalid value \"AQEBAQEBAQE=\": expected 16 hexadecimal digits"
        );
        let mut body = docs_body();
        body["fCnt"] = json!(4_294_967_296u64);
        assert_eq!(
            parse_value(&body).unwrap_err().to_string(),
            "chirpstack webhook field `fCnt` has invalid value 4294967296: must be at most 4294967295"
        );
        let mut body = docs_body();
        body["rxInfo"][0]["rssi"] = json!("loud");
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::InvalidField {
                field: "rxInfo[].rssi",
                ..
            })
        ));
        assert_eq!(
            parse(Network::ChirpStack, br#"{"fPort": 1, "data": "qg=="}"#),
            Err(WebhookError::MissingField {
                network: Network::ChirpStack,
                field: "deviceInfo.devEui"
            })
        );
    }

    proptest! {
        #[test]
        fn any_field_replaced_by_any_value_never_panics(
            path in prop::sample::select(vec![
                vec!["deviceInfo"],
                vec!["deviceInfo", "devEui"],
                vec!["fPort"],
                vec!["fCnt"],
                vec!["data"],
                vec!["time"],
                vec!["rxInfo"],
                vec!["rxInfo", "0"],
                vec!["rxInfo", "0", "gatewayId"],
                vec!["rxInfo", "0", "rssi"],
                vec!["rxInfo", "0", "snr"],
                vec!["txInfo"],
                vec!["txInfo", "frequency"],
                vec!["txInfo", "modulation"],
                vec!["txInfo", "modulation", "lora", "spreadingFactor"],
            ]),
            replacement in any_json(),
        ) {
            let mut body = docs_body();
            replace(&mut body, &path, replacement);
            let _ = parse_value(&body);
        }
    }
}
