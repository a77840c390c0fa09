//! Actility ThingPark `DevEUI_uplink` documents (see the field mapping in the
//! parent module).

use super::json::{Cx, Object, Reception, best, get};
use super::{Network, Uplink, WebhookError};

pub(super) fn parse(cx: Cx, root: &Object) -> Result<Uplink, WebhookError> {
    let up = cx.object(
        cx.required(root, "DevEUI_uplink", "DevEUI_uplink")?,
        "DevEUI_uplink",
    )?;

    let dev_eui = cx.dev_eui(
        cx.required(up, "DevEUI", "DevEUI_uplink.DevEUI")?,
        "DevEUI_uplink.DevEUI",
    )?;
    let f_port = cx.f_port(get(up, "FPort"), "DevEUI_uplink.FPort")?;
    let payload = cx.hex_payload(get(up, "payload_hex"), "DevEUI_uplink.payload_hex")?;
    let f_cnt = cx.narrow(
        cx.required(up, "FCntUp", "DevEUI_uplink.FCntUp")?,
        "DevEUI_uplink.FCntUp",
        u32::MAX.into(),
    )?;
    let time_us = cx.optional_timestamp_us(get(up, "Time"), "DevEUI_uplink.Time")?;

    let stations = receptions(cx, up)?;
    // The top-level Lrr* fields describe the station ThingPark itself ranks
    // best; the Lrrs list only fills in what the top level lacks.
    let mut top = Reception {
        gateway: cx.optional_string(get(up, "Lrrid"), "DevEUI_uplink.Lrrid")?,
        rssi: cx.optional_float(get(up, "LrrRSSI"), "DevEUI_uplink.LrrRSSI")?,
        snr: cx.optional_float(get(up, "LrrSNR"), "DevEUI_uplink.LrrSNR")?,
    };
    let station_count = stations.len();
    // Missing radio values are taken from the listed entry of the same
    // station, or from the best listed station when no station is named.
    let incomplete = top.gateway.is_none() || top.rssi.is_none() || top.snr.is_none();
    let fallback = match &top.gateway {
        Some(id) => stations
            .into_iter()
            .find(|s| s.gateway.as_ref() == Some(id)),
        None => best(stations),
    };
    if incomplete && let Some(fallback) = fallback {
        top.gateway = top.gateway.or(fallback.gateway);
        top.rssi = top.rssi.or(fallback.rssi);
        top.snr = top.snr.or(fallback.snr);
    }
    let gateways = match get(up, "DevLrrCnt") {
        Some(v) => cx.narrow(v, "DevEUI_uplink.DevLrrCnt", u32::MAX.into())?,
        None if station_count > 0 => u32::try_from(station_count).unwrap_or(u32::MAX),
        None => u32::from(top.gateway.is_some()),
    };

    let spreading_factor = get(up, "SpFact")
        .map(|v| cx.narrow(v, "DevEUI_uplink.SpFact", 255))
        .transpose()?;
    let frequency_hz = get(up, "Frequency")
        .map(|v| cx.mhz_to_hz(v, "DevEUI_uplink.Frequency"))
        .transpose()?;

    Ok(Uplink {
        network: Network::ThingPark,
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

/// The `Lrrs.Lrr[]` list of receiving stations.
fn receptions(cx: Cx, up: &Object) -> Result<Vec<Reception>, WebhookError> {
    let Some(list) = cx.lookup(up, &["Lrrs", "Lrr"], "DevEUI_uplink.Lrrs.Lrr")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in cx.array(list, "DevEUI_uplink.Lrrs.Lrr")? {
        let entry = cx.object(entry, "DevEUI_uplink.Lrrs.Lrr[]")?;
        out.push(Reception {
            gateway: cx.optional_string(get(entry, "Lrrid"), "DevEUI_uplink.Lrrs.Lrr[].Lrrid")?,
            rssi: cx.optional_float(get(entry, "LrrRSSI"), "DevEUI_uplink.Lrrs.Lrr[].LrrRSSI")?,
            snr: cx.optional_float(get(entry, "LrrSNR"), "DevEUI_uplink.Lrrs.Lrr[].LrrSNR")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::json::testing::{any_json, replace};
    use super::super::{Network, WebhookError, parse};
    use proptest::prelude::*;
    use serde_json::Value;

    // Source: ThingPark X documentation, "Uplink Message" page, "Original
    // message" example (the format that sends every number as a string).
    const DOCS_STRING_NUMBERS: &str = r#"{
        "DevEUI_uplink": {
            "Time": "2018-10-03T15:38:46.882+02:00",
            "DevEUI": "0018B20000000B20",
            "FPort": "1",
            "FCntUp": "1174",
            "ADRbit": "1",
            "MType": "4",
            "FCntDn": "1229",
            "payload_hex": "9e1c4852512000220020e3831071",
            "mic_hex": "cfffc70f",
            "Lrcid": "00000206",
            "LrrRSSI": "-80.000000",
            "LrrSNR": "7.000000",
            "SpFact": "7",
            "SubBand": "G2",
            "Channel": "LC6",
            "DevLrrCnt": "1",
            "Lrrid": "004A18E3",
            "Late": "0",
            "LrrLAT": "45.851032",
            "LrrLON": "1.266230",
            "Lrrs": {
                "Lrr": [
                    {
                        "Lrrid": "004A18E3",
                        "Chain": "0",
                        "LrrRSSI": "-80.000000",
                        "LrrSNR": "7.000000",
                        "LrrESP": "-80.790100"
                    }
                ]
            },
            "CustomerID": "1100000077",
            "CustomerData": {
                "alr": {"pro": "ADRF/DEMO", "ver": "2"},
                "tags": ["site=Paris"],
                "name": "My Demo Device"
            },
            "ModelCfg": "1:TemperatureService, 2:SwissPostDevice",
            "InstantPER": 0.0,
            "MeanPER": 0.0,
            "DevAddr": "04D2848E",
            "AckRequested": 1,
            "TxPower": 2.0,
            "NbTrans": 1,
            "Frequency": 868.1,
            "DynamicClass": "A"
        }
    }"#;

    // Source: ThingPark X documentation, "Uplink Message" page, current
    // example (numbers as numbers); the decoded "payload"/"points" objects and
    // trailing URLs of the example are left out.
    const DOCS_NUMBERS: &str = r#"{
        "DevEUI_uplink": {
            "Time": "2024-12-17T09:16:55.911+00:00",
            "DevEUI": "0018B20000000BEE",
            "FPort": 1,
            "FCntUp": 368,
            "LostUplinksAS": 0,
            "ADRbit": 1,
            "MType": 4,
            "FCntDn": 370,
            "payload_hex": "9e184856043000211770baae0bc9",
            "mic_hex": "d0ffa164",
            "Lrcid": "000000CB",
            "LrrRSSI": -84.0,
            "LrrSNR": 9.75,
            "LrrESP": -84.437256,
            "SpFact": 7,
            "SubBand": "G1",
            "Channel": "LC3",
            "Lrrid": "10001273",
            "Late": 0,
            "LrrLAT": 47.934113,
            "LrrLON": 1.196017,
            "Lrrs": {
                "Lrr": [
                    {"Lrrid": "10001273", "Chain": 0, "LrrRSSI": -84.0, "LrrSNR": 9.75, "LrrESP": -84.437256}
                ]
            },
            "DevLrrCnt": 1,
            "CustomerID": "100002164",
            "CustomerData": {
                "loc": null,
                "alr": {"pro": "ADRF/FIELD", "ver": "1"},
                "tags": ["Site=Paris", "Key=Value", "Bruno Devices"],
                "doms": [],
                "name": "Adeunis FieldTester #Bruno"
            },
            "ModelCfg": "1:ShowRoomTag",
            "InstantPER": 0.0,
            "MeanPER": 0.0,
            "DevAddr": "040006CC",
            "AckRequested": 1,
            "rawMacCommands": "",
            "TxPower": 2.0,
            "NbTrans": 1,
            "Frequency": 868.5,
            "DynamicClass": "A",
            "PayloadEncryption": 0
        }
    }"#;

    // Source: ThingPark X documentation, "ChirpStack" processor page, input
    // uplink message (two receiving stations).
    const DOCS_TWO_STATIONS: &str = r#"{
        "DevEUI_uplink": {
            "Time": "2023-03-01T00:00:11.013+01:00",
            "DevEUI": "402C765000000074",
            "FPort": 2,
            "FCntUp": 53,
            "ADRbit": 1,
            "MType": 4,
            "FCntDn": 54,
            "payload_hex": "02300040a0",
            "mic_hex": "61fa24cf",
            "Lrcid": "00000127",
            "LrrRSSI": -83.0,
            "LrrSNR": 9.5,
            "SpFact": 7,
            "SubBand": "G0",
            "Channel": "LC1",
            "DevLrrCnt": 2,
            "Lrrid": "3C200E92",
            "Late": 0,
            "LrrLAT": 48.933865,
            "LrrLON": 1.195898,
            "Lrrs": {
                "Lrr": [
                    {"Lrrid": "3C200E92", "Chain": 0, "LrrRSSI": -83.0, "LrrSNR": 9.5, "LrrESP": -83.461838},
                    {"Lrrid": "1000027C", "Chain": 0, "LrrRSSI": -89.0, "LrrSNR": 6.75, "LrrESP": -89.832695}
                ]
            },
            "CustomerID": "100133870",
            "CustomerData": {"alr": {"pro": "LORA/Generic", "ver": "1"}, "tags": ["site=Paris"], "name": "My Demo Device"},
            "DriverCfg": {"app": {"pId": "actility", "mId": "demo", "ver": "1"}},
            "InstantPER": 0.0,
            "MeanPER": 0.0,
            "DevAddr": "04D2848E",
            "AckRequested": 1,
            "TxPower": 2.0,
            "NbTrans": 1,
            "Frequency": 868.1,
            "DynamicClass": "A",
            "payload": {"battery": {"type": "tension", "value": 3.6, "unit": "V", "error": 0}}
        }
    }"#;

    fn parse_value(body: &Value) -> Result<super::super::Uplink, WebhookError> {
        parse(Network::ThingPark, body.to_string().as_bytes())
    }

    fn docs_body() -> Value {
        serde_json::from_str(DOCS_NUMBERS).unwrap()
    }

    #[test]
    fn docs_example_with_string_numbers() {
        let up = parse(Network::ThingPark, DOCS_STRING_NUMBERS.as_bytes()).unwrap();
        assert_eq!(up.network, Network::ThingPark);
        assert_eq!(up.dev_eui, "0018b20000000b20");
        assert_eq!(up.f_port, 1);
        assert_eq!(up.f_cnt, 1174);
        assert_eq!(
            up.payload,
            [
                0x9e, 0x1c, 0x48, 0x52, 0x51, 0x20, 0x00, 0x22, 0x00, 0x20, 0xe3, 0x83, 0x10, 0x71
            ]
        );
        assert_eq!(up.time_us, Some(1_538_573_926_882_000));
        assert_eq!(up.rssi, Some(-80.0));
        assert_eq!(up.snr, Some(7.0));
        assert_eq!(up.gateway.as_deref(), Some("004A18E3"));
        assert_eq!(up.gateways, 1);
        assert_eq!(up.spreading_factor, Some(7));
        assert_eq!(up.frequency_hz, Some(868_100_000));
    }

    #[test]
    fn docs_example_with_numbers() {
        let up = parse(Network::ThingPark, DOCS_NUMBERS.as_bytes()).unwrap();
        assert_eq!(up.dev_eui, "0018b20000000bee");
        assert_eq!((up.f_port, up.f_cnt), (1, 368));
        assert_eq!(up.payload.len(), 14);
        assert_eq!(up.time_us, Some(1_734_427_015_911_000));
        assert_eq!((up.rssi, up.snr), (Some(-84.0), Some(9.75)));
        assert_eq!(up.gateway.as_deref(), Some("10001273"));
        assert_eq!(up.frequency_hz, Some(868_500_000));
    }

    #[test]
    fn docs_example_with_two_stations() {
        let up = parse(Network::ThingPark, DOCS_TWO_STATIONS.as_bytes()).unwrap();
        assert_eq!(up.dev_eui, "402c765000000074");
        assert_eq!((up.f_port, up.f_cnt), (2, 53));
        assert_eq!(up.payload, [0x02, 0x30, 0x00, 0x40, 0xa0]);
        assert_eq!(up.time_us, Some(1_677_625_211_013_000));
        assert_eq!(
            (up.gateway.as_deref(), up.rssi, up.snr),
            (Some("3C200E92"), Some(-83.0), Some(9.5))
        );
        assert_eq!(up.gateways, 2);
    }

    // Derived from the two-station example: without the top-level station
    // fields and DevLrrCnt, the best listed station and the list length are used.
    #[test]
    fn station_list_fills_in_missing_top_level_fields() {
        let mut body: Value = serde_json::from_str(DOCS_TWO_STATIONS).unwrap();
        let up = body["DevEUI_uplink"].as_object_mut().unwrap();
        for key in ["LrrRSSI", "LrrSNR", "Lrrid", "DevLrrCnt"] {
            up.remove(key);
        }
        let parsed = parse_value(&body).unwrap();
        assert_eq!(
            (parsed.gateway.as_deref(), parsed.rssi, parsed.snr),
            (Some("3C200E92"), Some(-83.0), Some(9.5))
        );
        assert_eq!(parsed.gateways, 2);
    }

    #[test]
    fn mac_only_frame_without_port_is_refused() {
        let mut body = docs_body();
        let up = body["DevEUI_uplink"].as_object_mut().unwrap();
        up.remove("FPort");
        up.remove("payload_hex");
        let err = parse_value(&body).unwrap_err();
        assert_eq!(
            err,
            WebhookError::NoApplicationData {
                network: Network::ThingPark,
                field: "DevEUI_uplink.FPort",
                reason: "is absent, so the frame is MAC-only"
            }
        );
        assert_eq!(
            err.to_string(),
            "thingpark uplink carries no application data: `DevEUI_uplink.FPort` is absent, so the frame is MAC-only"
        );
    }

    #[test]
    fn port_zero_and_empty_payload_are_refused() {
        let mut body = docs_body();
        body["DevEUI_uplink"]["FPort"] = Value::from(0);
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::NoApplicationData {
                field: "DevEUI_uplink.FPort",
                ..
            })
        ));
        let mut body = docs_body();
        body["DevEUI_uplink"]["payload_hex"] = Value::from("");
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::NoApplicationData {
                field: "DevEUI_uplink.payload_hex",
                reason: "is empty",
                ..
            })
        ));
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut body = docs_body();
        body["DevEUI_uplink"]["DevEUI"] = Value::from("0018B2000000");
        assert_eq!(
            parse_value(&body).unwrap_err().to_string(),
            "thingpark webhook field `DevEUI_uplink.DevEUI` has invalid value \"0018B2000000\": expected 16 hexadecimal digits"
        );
        let mut body = docs_body();
        body["DevEUI_uplink"]["FCntUp"] = Value::from("many");
        assert_eq!(
            parse_value(&body).unwrap_err().to_string(),
            "thingpark webhook field `DevEUI_uplink.FCntUp` has invalid value \"many\": expected a non-negative whole number"
        );
        let mut body = docs_body();
        body["DevEUI_uplink"]["Time"] = Value::from("yesterday");
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::InvalidField {
                field: "DevEUI_uplink.Time",
                ..
            })
        ));
        let mut body = docs_body();
        body["DevEUI_uplink"]["Lrrs"] = Value::from(3);
        assert!(matches!(
            parse_value(&body),
            Err(WebhookError::InvalidField {
                field: "DevEUI_uplink.Lrrs.Lrr",
                ..
            })
        ));
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            parse(Network::ThingPark, br#"{"DevEUI_downlink_Sent": {}}"#),
            Err(WebhookError::MissingField {
                network: Network::ThingPark,
                field: "DevEUI_uplink"
            })
        );
        let mut body = docs_body();
        body["DevEUI_uplink"]
            .as_object_mut()
            .unwrap()
            .remove("FCntUp");
        assert_eq!(
            parse_value(&body),
            Err(WebhookError::MissingField {
                network: Network::ThingPark,
                field: "DevEUI_uplink.FCntUp"
            })
        );
    }

    proptest! {
        #[test]
        fn any_field_replaced_by_any_value_never_panics(
            field in prop::sample::select(vec![
                "DevEUI", "FPort", "FCntUp", "payload_hex", "Time", "LrrRSSI", "LrrSNR", "Lrrid",
                "Lrrs", "DevLrrCnt", "SpFact", "Frequency",
            ]),
            replacement in any_json(),
        ) {
            let mut body = docs_body();
            replace(&mut body, &["DevEUI_uplink", field], replacement);
            let _ = parse_value(&body);
        }

        #[test]
        fn station_fields_replaced_by_any_value_never_panic(
            field in prop::sample::select(vec!["Lrrid", "LrrRSSI", "LrrSNR"]),
            replacement in any_json(),
        ) {
            let mut body: Value = serde_json::from_str(DOCS_TWO_STATIONS).unwrap();
            body["DevEUI_uplink"].as_object_mut().unwrap().remove("LrrRSSI");
            replace(&mut body, &["DevEUI_uplink", "Lrrs", "Lrr", "1", field], replacement.clone());
            let _ = parse_value(&body);
            replace(&mut body, &["DevEUI_uplink", "Lrrs", "Lrr", "1"], replacement);
            let _ = parse_value(&body);
        }
    }
}
