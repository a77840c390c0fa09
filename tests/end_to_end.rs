//! The whole pipeline in one process: readings sent over HTTP and MQTT must all be found in
//! the Parquet lake through DataFusion, and the live aggregates must equal an oracle computed
//! independently from the same readings.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use weir::cli::PipelineArgs;
use weir::pipeline::{Pipeline, PipelineConfig, Roles};
use weir_ingest::registry::NewDevice;
use weir_sinks::sql;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";
const SEC_MS: i64 = 1000;

fn args() -> PipelineArgs {
    PipelineArgs {
        kafka: None,
        kafka_option: Vec::new(),
        replication_factor: 1,
        kafka_delivery_timeout: Duration::from_secs(5),
        topic_prefix: String::new(),
        instance_id: None,
        lake: None,
        lake_option: Vec::new(),
        partitions: 4,
        operator_token: Some("test-token".into()),
        max_body_bytes: 1024 * 1024,
        tls_cert: None,
        tls_key: None,
        max_connections_per_ip: 1024,
        max_connections: 50_000,
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_max_packet_bytes: 64 * 1024,
        mqtt_receive_max: 16,
        // Readings go as fast as the test sends them: rate limits are tested on their own.
        device_rate_limit: 0,
        device_burst: 100,
        tenant_quota: 0,
        window: Duration::from_secs(300),
        hop: Duration::from_secs(10),
        allowed_lateness: Duration::from_secs(60),
        emit_interval: Duration::from_millis(200),
        twins_interval: Duration::from_millis(200),
        silent_factor: 3.0,
        silent_min: Duration::from_secs(60),
        batch_max_records: 500,
        batch_max_age: Duration::from_millis(300),
        target_file_size: 128 << 20,
        // The lake is compacted while the tests write and read it: every check of the lake
        // below holds through compactions.
        compact_interval: Duration::from_secs(1),
        compact_min_files: 2,
        retention_days: None,
        tenant_retention: Vec::new(),
        vacuum_after: Duration::from_secs(3600),
    }
}

fn device(id: &str, building: &str) -> NewDevice {
    NewDevice {
        floor: Some("1".into()),
        room: Some("1-01".into()),
        ..NewDevice::with_keys(id, building, KEY, KEY)
    }
}

/// A reading the test sends, and what the oracle knows about it.
#[derive(Clone, Debug)]
struct Sent {
    device: &'static str,
    tenant: &'static str,
    building: &'static str,
    seq: i64,
    time_ms: i64,
    temperature: f64,
    humidity: Option<f64>,
}

impl Sent {
    fn body(&self) -> Value {
        let mut body =
            json!({"seq": self.seq, "time": self.time_ms, "temperature": self.temperature});
        if let Some(h) = self.humidity {
            body["humidity"] = json!(h);
        }
        body
    }
}

/// The whole pipeline in this process, on the embedded bus, on ports of its own.
async fn start(data_dir: &std::path::Path, args: PipelineArgs) -> Pipeline {
    Pipeline::start(PipelineConfig {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        roles: Roles::ALL,
        drain_on_shutdown: true,
        args,
    })
    .await
    .unwrap()
}

/// Count, mean, min, max and sample standard deviation.
fn oracle(values: &[f64]) -> Option<(u64, f64, f64, f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((values.len() as u64, mean, min, max, sd))
}

/// Checks one measurement of an API answer against the oracle.
fn assert_measure(got: &Value, values: &[f64], what: &str) {
    let (count, mean, min, max, sd) = oracle(values).unwrap();
    assert_eq!(got["count"].as_u64(), Some(count), "{what}: {got}");
    assert!(
        (got["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{what}: {got} vs {mean}"
    );
    assert_eq!(got["min"].as_f64(), Some(min), "{what}");
    assert_eq!(got["max"].as_f64(), Some(max), "{what}");
    match sd {
        Some(sd) => assert!(
            (got["stddev"].as_f64().unwrap() - sd).abs() < 1e-9,
            "{what}: {got} vs {sd}"
        ),
        None => assert!(got["stddev"].is_null(), "{what}"),
    }
}

/// Reads `aggregates` events off a Server-Sent Events response.
#[derive(Default)]
struct SseEvents {
    buffer: String,
}

impl SseEvents {
    async fn next(&mut self, response: &mut reqwest::Response) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(event.contains("event: aggregates"), "{event}");
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn post(
    client: &reqwest::Client,
    base: &url::Url,
    device: &str,
    body: &Value,
) -> reqwest::Response {
    // Devices authenticate as with IoT Hub: a SAS token signed with their key.
    let expiry = chrono::Utc::now().timestamp() as u64 + 3600;
    let token =
        weir_common::sas::sign(&format!("weir.test/devices/{device}"), KEY, expiry).unwrap();
    client
        .post(base.join("v1/telemetry").unwrap())
        .header("authorization", token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A device on MQTT 3.1.1 with a SAS token, publishing QoS 1 readings on `weir/telemetry`.
struct MqttDevice {
    client: rumqttc::AsyncClient,
    published: std::sync::atomic::AtomicUsize,
    acked: tokio::sync::watch::Receiver<usize>,
}

impl MqttDevice {
    async fn connect(addr: std::net::SocketAddr, device: &str) -> MqttDevice {
        let expiry = chrono::Utc::now().timestamp() as u64 + 3600;
        let token =
            weir_common::sas::sign(&format!("weir.test/devices/{device}"), KEY, expiry).unwrap();
        let mut options = rumqttc::MqttOptions::new(device, "127.0.0.1", addr.port());
        options.set_credentials(format!("weir.test/{device}/?api-version=2021-04-12"), token);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
        let (tx, acked) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        tx.send_modify(|n| *n += 1);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the MQTT connection failed: {e}"),
                }
            }
        });
        MqttDevice {
            client,
            published: Default::default(),
            acked,
        }
    }

    async fn publish(&self, body: &Value) {
        self.client
            .publish(
                "weir/telemetry",
                rumqttc::QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .unwrap();
        self.published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for a PUBACK of every message: each is then on the bus.
    async fn all_acknowledged(&self) {
        let published = self.published.load(std::sync::atomic::Ordering::Relaxed);
        let mut acked = self.acked.clone();
        tokio::time::timeout(Duration::from_secs(30), acked.wait_for(|n| *n >= published))
            .await
            .expect("every MQTT message acknowledged")
            .unwrap();
    }
}

fn column_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_lake_and_the_aggregates_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), args()).await;
    let registry = &pipeline.registry;
    let mut api_keys = BTreeMap::new();
    for tenant in ["fabrikam", "contoso"] {
        let (_, key) = registry.create_tenant(tenant, tenant).await.unwrap();
        api_keys.insert(tenant, key);
    }
    registry
        .provision("fabrikam", vec![device("d1", "b1"), device("d2", "b1")])
        .await
        .unwrap();
    registry
        .provision("contoso", vec![device("d3", "b1")])
        .await
        .unwrap();
    let base = pipeline.url();
    let client = reqwest::Client::new();

    // Seven minutes of readings ending now, in order, three devices in two buildings (the same
    // building id under two tenants), then a few out of order within the allowed lateness.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let start_ms = now_ms - 420 * SEC_MS;
    let mut sent: Vec<Sent> = Vec::new();
    let places = [
        ("d1", "fabrikam", "b1"),
        ("d2", "fabrikam", "b1"),
        ("d3", "contoso", "b1"),
    ];
    for i in 0..420i64 {
        let (device, tenant, building) = places[(i % 3) as usize];
        sent.push(Sent {
            device,
            tenant,
            building,
            seq: i / 3,
            time_ms: start_ms + i * SEC_MS,
            temperature: 18.0 + (i % 17) as f64 * 0.37,
            humidity: (i % 4 != 0).then_some(30.0 + (i % 11) as f64),
        });
    }
    for (k, (device, tenant, building)) in places.into_iter().enumerate() {
        sent.push(Sent {
            device,
            tenant,
            building,
            seq: 1000 + k as i64,
            time_ms: now_ms - 30 * SEC_MS - k as i64,
            temperature: 29.5,
            humidity: None,
        });
    }

    // d1 sends batches of five readings (fifteen seconds), d2 one reading per MQTT message
    // (QoS 1), d3 one reading per request, all in time order but for the batching: nothing is
    // later than the allowed lateness, so every reading counts. d2 waits for its
    // acknowledgements every five messages: QoS 1 messages in flight are not waited for, and
    // on a busy machine they could fall more than the lateness behind the HTTP devices.
    let mqtt = MqttDevice::connect(pipeline.mqtt_addr.expect("an MQTT listener"), "d2").await;
    let mut d1_batch: Vec<Value> = Vec::new();
    for s in &sent {
        if s.device == "d1" {
            d1_batch.push(s.body());
            if d1_batch.len() == 5 {
                let body = Value::Array(std::mem::take(&mut d1_batch));
                assert_eq!(post(&client, &base, "d1", &body).await.status(), 202);
            }
        } else if s.device == "d2" {
            mqtt.publish(&s.body()).await;
            if s.seq % 5 == 4 {
                mqtt.all_acknowledged().await;
            }
        } else {
            let response = post(&client, &base, s.device, &s.body()).await;
            assert_eq!(response.status(), 202, "{:?}", response.text().await);
        }
    }
    if !d1_batch.is_empty() {
        let body = Value::Array(d1_batch);
        assert_eq!(post(&client, &base, "d1", &body).await.status(), 202);
    }
    mqtt.all_acknowledged().await;
    // Refused readings never reach the lake.
    let bad = post(
        &client,
        &base,
        "d2",
        &json!({"seq": 99999, "temperature": 900}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let bad = post(
        &client,
        &base,
        "d2",
        &json!([{"seq": 99998, "temperature": 20}, {"temperature": 20}]),
    )
    .await;
    assert_eq!(
        bad.status(),
        400,
        "one bad reading refuses the whole request"
    );

    // Both refused requests are kept as dead letters, seen by their tenant only.
    let dead_letters = |tenant: &str| {
        let request = client
            .get(base.join("v1/dead-letters").unwrap())
            .bearer_auth(&api_keys[tenant]);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["dead_letters"].as_array().unwrap().clone()
        }
    };
    let mut letters = Vec::new();
    for _ in 0..50 {
        letters = dead_letters("fabrikam").await;
        if letters.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters
            .iter()
            .all(|l| l["device"] == "d2" && l["protocol"] == "http-json")
    );
    assert!(
        letters[1]["reason"]
            .as_str()
            .unwrap()
            .contains("outside the valid range"),
        "{letters:?}"
    );
    assert!(dead_letters("contoso").await.is_empty());

    // The live aggregates, once the processor has caught up, equal the oracle: the building,
    // its floor and its room. A window ends after its bus partition's newest event time.
    let hop_ms = 10 * SEC_MS;
    let partition = |tenant: &str, building: &str| {
        weir_common::bus::partition_for_key(format!("{tenant}/{building}").as_bytes(), 4)
    };
    for (tenant, building) in [("fabrikam", "b1"), ("contoso", "b1")] {
        let watermark_ms = sent
            .iter()
            .filter(|s| partition(s.tenant, s.building) == partition(tenant, building))
            .map(|s| s.time_ms)
            .max()
            .unwrap();
        let end_ms = watermark_ms.div_euclid(hop_ms) * hop_ms + hop_ms;
        let in_window: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.tenant == tenant && s.building == building)
            .filter(|s| (end_ms - 300 * SEC_MS..end_ms).contains(&s.time_ms))
            .collect();
        let url = base
            .join(&format!(
                "v1/buildings/{building}/aggregates?tenant={tenant}"
            ))
            .unwrap();
        let mut view = Value::Null;
        for _ in 0..100 {
            view = client
                .get(url.clone())
                .bearer_auth(&api_keys[tenant])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rooms_current =
                view["rooms"][0]["readings"].as_u64() == Some(in_window.len() as u64);
            if view["readings"].as_u64() == Some(in_window.len() as u64) && rooms_current {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            view["readings"].as_u64(),
            Some(in_window.len() as u64),
            "{view}"
        );
        // Every device of the test is on floor 1, room 1-01.
        assert_eq!(view["floors"].as_array().unwrap().len(), 1, "{view}");
        assert_eq!(view["floors"][0]["floor"], "1");
        assert_eq!(view["rooms"].as_array().unwrap().len(), 1, "{view}");
        assert_eq!(view["rooms"][0]["room"], "1-01");
        let temperatures: Vec<f64> = in_window.iter().map(|s| s.temperature).collect();
        let humidities: Vec<f64> = in_window.iter().filter_map(|s| s.humidity).collect();
        for (name, values) in [("temperature", temperatures), ("humidity", humidities)] {
            for (level, zone) in [
                ("building", &view),
                ("floor", &view["floors"][0]),
                ("room", &view["rooms"][0]),
            ] {
                let what = format!("{tenant}/{building} {level} {name}");
                assert_measure(&zone["measurements"][name], &values, &what);
            }
        }
        assert!(view["measurements"].get("co2").is_none());
        assert_eq!(view["late_readings"], 0);
    }

    // The final minutes of fabrikam/b1 as a series, each equal to the oracle.
    let series: Value = client
        .get(base.join("v1/buildings/b1/series?window=1m").unwrap())
        .bearer_auth(&api_keys["fabrikam"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let points = series["points"].as_array().unwrap();
    assert!(
        points.len() >= 4,
        "the minutes up to the lateness: {series}"
    );
    for point in points {
        let start = chrono::DateTime::parse_from_rfc3339(point["start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let values: Vec<f64> = sent
            .iter()
            .filter(|s| s.tenant == "fabrikam" && s.building == "b1")
            .filter(|s| (start..start + 60 * SEC_MS).contains(&s.time_ms))
            .map(|s| s.temperature)
            .collect();
        assert_eq!(point["readings"].as_u64(), Some(values.len() as u64));
        assert_measure(&point["measurements"]["temperature"], &values, "minute");
    }
    let hours: Value = client
        .get(
            base.join("v1/buildings/b1/series?window=1h&floor=1&room=1-01")
                .unwrap(),
        )
        .bearer_auth(&api_keys["fabrikam"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let in_hours: u64 = hours["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["readings"].as_u64().unwrap())
        .sum();
    let in_minutes: u64 = points.iter().map(|p| p["readings"].as_u64().unwrap()).sum();
    assert_eq!(
        in_hours, in_minutes,
        "the room's hours fold the final minutes: {hours}"
    );
    let refused = client
        .get(
            base.join("v1/buildings/b1/series?window=1m&floor=1")
                .unwrap(),
        )
        .bearer_auth(&api_keys["fabrikam"])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // Twins: the newest reported values, for the device's own tenant only.
    let twin = |device: &str, tenant: &str| {
        client
            .get(base.join(&format!("v1/devices/{device}/twin")).unwrap())
            .bearer_auth(&api_keys[tenant])
            .send()
    };
    let newest = sent
        .iter()
        .filter(|s| s.device == "d1")
        .max_by_key(|s| s.time_ms)
        .unwrap();
    let mut d1 = Value::Null;
    for _ in 0..50 {
        d1 = twin("d1", "fabrikam").await.unwrap().json().await.unwrap();
        if d1["reported"]["temperature"]["value"].as_f64() == Some(newest.temperature) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        d1["reported"]["temperature"]["value"].as_f64(),
        Some(newest.temperature),
        "{d1}"
    );
    assert_eq!(d1["reported"]["temperature"]["unit"], "°C");
    assert_eq!(d1["building"], "b1");
    assert_eq!(d1["room"], "1-01");
    assert_eq!(d1["silent"], false);
    assert_eq!(d1["protocol"], "http-json");
    assert_eq!(twin("d1", "contoso").await.unwrap().status(), 404);

    // The live stream: the current window at once, then a new one when a reading arrives.
    let mut stream = client
        .get(base.join("v1/buildings/b1/stream").unwrap())
        .bearer_auth(&api_keys["contoso"])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = SseEvents::default();
    let first = events.next(&mut stream).await;
    assert_eq!(first["tenant"], "contoso");
    // A reading hotter than any before it, to recognise the window that includes it.
    let hot = Sent {
        device: "d3",
        tenant: "contoso",
        building: "b1",
        seq: 5000,
        time_ms: chrono::Utc::now().timestamp_millis(),
        temperature: 49.5,
        humidity: None,
    };
    let accepted = std::time::Instant::now();
    assert_eq!(post(&client, &base, "d3", &hot.body()).await.status(), 202);
    sent.push(hot);
    loop {
        let next = events.next(&mut stream).await;
        if next["measurements"]["temperature"]["max"].as_f64() == Some(49.5) {
            break;
        }
    }
    eprintln!(
        "accepted -> visible in the stream: {:?}",
        accepted.elapsed()
    );
    drop(stream);

    // The operator sees every tenant's, and must say which when a building id is shared; a
    // tenant sees only its own; nobody sees anything without a token.
    let aggregates = |tenant: &str, token: Option<&str>| {
        let mut request = client.get(
            base.join(&format!("v1/buildings/b1/aggregates{tenant}"))
                .unwrap(),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let operator = pipeline.operator_token.clone();
    assert_eq!(aggregates("", Some(&operator)).await.unwrap().status(), 400);
    assert_eq!(
        aggregates("?tenant=contoso", Some(&operator))
            .await
            .unwrap()
            .status(),
        200
    );
    let fabrikam = api_keys["fabrikam"].as_str();
    assert_eq!(
        aggregates("?tenant=contoso", Some(fabrikam))
            .await
            .unwrap()
            .status(),
        404
    );
    let own: Value = aggregates("", Some(fabrikam))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["tenant"], "fabrikam");
    assert_eq!(aggregates("", None).await.unwrap().status(), 401);
    assert_eq!(
        aggregates("", Some("wtk_guess")).await.unwrap().status(),
        401
    );

    // A clean stop drains the bus into the lake.
    let lake = pipeline.lake.clone();
    pipeline.stop().await.unwrap();
    let batches = sql::query(
        &lake,
        "SELECT device, seq, temperature FROM telemetry ORDER BY device, seq",
    )
    .await
    .unwrap();
    let mut expected: Vec<(String, i64, f64)> = sent
        .iter()
        .map(|s| (s.device.to_owned(), s.seq, s.temperature))
        .collect();
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let devices: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            // Scans may hand strings out as Utf8View; compare them as plain strings.
            let c =
                arrow::compute::cast(b.column_by_name("device").unwrap(), &DataType::Utf8).unwrap();
            let c = c.as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let seqs = column_i64(&batches, "seq");
    let temperatures: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("temperature")
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect();
    let stored: Vec<(String, i64, f64)> = devices
        .into_iter()
        .zip(seqs)
        .zip(temperatures)
        .map(|((d, s), t)| (d, s, t))
        .collect();
    assert_eq!(stored.len(), sent.len(), "every accepted reading, once");
    assert_eq!(stored, expected);

    // The final minutes are in the lake too, once each, with the readings they counted.
    let minutes = sql::query(
        &lake,
        "SELECT CAST(window_start AS BIGINT) AS start_us, readings, level FROM building_aggregates \
         WHERE tenant = 'fabrikam' AND building = 'b1' AND level = 'building' ORDER BY start_us",
    )
    .await
    .unwrap();
    let starts = column_i64(&minutes, "start_us");
    assert!(starts.len() >= points.len(), "{starts:?}");
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "no minute twice: {starts:?}"
    );
    for (start_us, readings) in starts.iter().zip(column_i64(&minutes, "readings")) {
        let start = start_us / 1000;
        let expected = sent
            .iter()
            .filter(|s| s.tenant == "fabrikam" && s.building == "b1")
            .filter(|s| (start..start + 60 * SEC_MS).contains(&s.time_ms))
            .count();
        assert_eq!(readings, expected as i64, "the minute from {start}");
    }

    // Per-tenant partitions hold the tenant's readings only.
    let per_tenant = sql::query(
        &lake,
        "SELECT tenant, count(*) AS n FROM telemetry GROUP BY tenant ORDER BY tenant",
    )
    .await
    .unwrap();
    let counts = column_i64(&per_tenant, "n");
    let mut by_tenant: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &sent {
        *by_tenant.entry(s.tenant).or_default() += 1;
    }
    assert_eq!(counts, by_tenant.values().copied().collect::<Vec<_>>());
}

#[tokio::test]
async fn health_and_unknown_routes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let args = PipelineArgs {
        operator_token: None,
        ..args()
    };
    let pipeline = start(dir.path(), args).await;
    let base = pipeline.url();
    let health = reqwest::get(base.join("healthz").unwrap()).await.unwrap();
    assert_eq!(health.status(), 200);
    let missing = reqwest::get(base.join("v1/nothing").unwrap())
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_route");
    pipeline.stop().await.unwrap();
    // The operator token was created on first start, readable by its owner only.
    let token = dir.path().join("operator-token");
    assert!(std::fs::read_to_string(&token).unwrap().len() >= 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

/// Microsoft's Azure IoT device SDK for Python, unmodified, sends to weir as to an IoT hub:
/// its connection string names weir, it connects over MQTT and TLS on port 8883 trusting
/// weir's certificate, and each message it sends is in the lake with its properties.
/// `WEIR_IOTHUB_SDK_PYTHON` names a Python with `azure-iot-device` (scripts/test makes one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_iot_device_sdk_sends_to_weir_and_keeps_a_twin() {
    let Some(python) = std::env::var_os("WEIR_IOTHUB_SDK_PYTHON") else {
        assert!(
            std::env::var_os("WEIR_REQUIRE_IOTHUB_SDK").is_none(),
            "WEIR_IOTHUB_SDK_PYTHON must name a Python with azure-iot-device"
        );
        eprintln!("SKIPPED: set WEIR_IOTHUB_SDK_PYTHON to a Python with azure-iot-device");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let args = PipelineArgs {
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path),
        // The SDK knows no other port.
        mqtt_listen: Some("127.0.0.1:8883".parse().unwrap()),
        ..args()
    };
    let pipeline = start(&dir.path().join("data"), args).await;
    pipeline
        .registry
        .provision("fabrikam", vec![device("sdk-1", "b1")])
        .await
        .unwrap();
    // A desired property set before the device connects is in the twin it reads. The API is
    // on HTTPS with the same certificate, for `localhost`.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut base = pipeline.url();
    base.set_host(Some("localhost")).unwrap();
    let desired = base
        .join("v1/devices/sdk-1/twin/desired?tenant=fabrikam")
        .unwrap();
    let set = |body: Value| {
        client
            .patch(desired.clone())
            .bearer_auth(&pipeline.operator_token)
            .json(&body)
            .send()
    };
    assert_eq!(set(json!({"interval": 60})).await.unwrap().status(), 200);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/iothub_device_sdk.py"
    );
    let mut child = tokio::process::Command::new(python)
        .args([script, "localhost", "sdk-1", KEY])
        .arg(&cert_path)
        .arg("5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let mut next_line = async || {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the SDK client said nothing for a minute")
            .unwrap();
        said.push(line.clone().unwrap_or_default());
        line
    };
    let mut twin = Value::Null;
    while let Some(line) = next_line().await {
        if let Some(json) = line.strip_prefix("twin ") {
            twin = serde_json::from_str(json).unwrap();
        }
        if line == "ready" {
            break;
        }
    }
    assert_eq!(twin["desired"]["interval"], 60, "{twin}");
    assert_eq!(twin["desired"]["$version"], 2, "{twin}");
    // A desired change made through the API reaches the connected device as a patch.
    assert_eq!(set(json!({"interval": 15})).await.unwrap().status(), 200);
    let mut patch = Value::Null;
    while let Some(line) = next_line().await {
        if let Some(json) = line.strip_prefix("desired ") {
            patch = serde_json::from_str(json).unwrap();
        }
    }
    let status = child.wait_with_output().await.unwrap();
    assert!(
        status.status.success(),
        "{said:?}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(patch, json!({"interval": 15, "$version": 3}), "{said:?}");
    // The property the device reported is in its twin, next to the desired ones.
    let twin: Value = client
        .get(base.join("v1/devices/sdk-1/twin?tenant=fabrikam").unwrap())
        .bearer_auth(&pipeline.operator_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let properties = &twin["properties"];
    assert_eq!(properties["reported"]["firmware"], "2.0.1", "{twin}");
    assert_eq!(properties["reported"]["sampling"]["seconds"], 60, "{twin}");
    assert_eq!(properties["desired"]["interval"], 15, "{twin}");
    let lake = pipeline.lake.clone();
    pipeline.stop().await.unwrap();
    let batches = sql::query(
        &lake,
        "SELECT seq, temperature, protocol, properties['temperatureAlert'] AS alert \
         FROM telemetry WHERE device = 'sdk-1' ORDER BY seq",
    )
    .await
    .unwrap();
    assert_eq!(column_i64(&batches, "seq"), [100, 101, 102, 103, 104]);
    let protocols = arrow::compute::cast(
        batches[0].column_by_name("protocol").unwrap(),
        &DataType::Utf8,
    )
    .unwrap();
    assert_eq!(protocols.as_string::<i32>().value(0), "iothub-mqtt");
    let alerts =
        arrow::compute::cast(batches[0].column_by_name("alert").unwrap(), &DataType::Utf8).unwrap();
    assert_eq!(alerts.as_string::<i32>().value(0), "false");
}

/// `POST /v1/sql` answers over the caller's rows only: a tenant's key cannot reach another
/// tenant's readings whatever its query says; the operator sees every tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http_is_scoped_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), args()).await;
    let registry = &pipeline.registry;
    let (_, fabrikam) = registry
        .create_tenant("fabrikam", "Fabrikam")
        .await
        .unwrap();
    let (_, contoso) = registry.create_tenant("contoso", "Contoso").await.unwrap();
    registry
        .provision("fabrikam", vec![device("f1", "b1")])
        .await
        .unwrap();
    registry
        .provision("contoso", vec![device("c1", "b1")])
        .await
        .unwrap();
    let base = pipeline.url();
    let client = reqwest::Client::new();
    for (device, n) in [("f1", 6), ("c1", 4)] {
        let body: Vec<Value> = (0..n).map(|seq| json!({"seq": seq, "co2": 500})).collect();
        let response = post(&client, &base, device, &Value::Array(body)).await;
        assert_eq!(response.status(), 202);
    }
    let sql = |token: String, body: Value| {
        let request = client
            .post(base.join("v1/sql").unwrap())
            .bearer_auth(token)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let count = json!({"sql": "SELECT count(*) AS n FROM telemetry"});
    // The sink commits within its batch age: wait for all ten readings.
    let operator = pipeline.operator_token.clone();
    for _ in 0..100 {
        let (_, body) = sql(operator.clone(), count.clone()).await;
        if body["rows"][0]["n"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sql(operator.clone(), count.clone()).await.1["rows"][0]["n"],
        10
    );
    assert_eq!(
        sql(fabrikam.clone(), count.clone()).await.1["rows"][0]["n"],
        6
    );
    assert_eq!(
        sql(contoso.clone(), count.clone()).await.1["rows"][0]["n"],
        4
    );
    let sneaky = json!({"sql": "SELECT count(*) AS n FROM telemetry WHERE tenant = 'contoso'"});
    assert_eq!(sql(fabrikam.clone(), sneaky).await.1["rows"][0]["n"], 0);
    let (status, body) = sql(
        fabrikam.clone(),
        json!({"sql": "SELECT 1", "tenant": "contoso"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("operator_only"))
    );
    let (status, body) = sql(fabrikam.clone(), json!({"sql": "DROP TABLE telemetry"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_sql"))
    );
    let (status, body) = sql("wtk_guess".into(), count.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("wrong_token"))
    );
    let (_, body) = sql(
        fabrikam,
        json!({"sql": "SELECT seq FROM telemetry ORDER BY seq", "max_rows": 2}),
    )
    .await;
    assert_eq!(body["rows"], json!([{"seq": 0}, {"seq": 1}]));
    assert_eq!(body["truncated"], true);
    assert_eq!(body["columns"], json!(["seq"]));
    pipeline.stop().await.unwrap();
}

/// An alert rule and a webhook set through the API: a hot reading raises an alert, the next
/// normal one clears it; both are listed by the API and delivered to the webhook, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_api_and_the_tenants_webhook() {
    use axum::body::Bytes;
    use axum::http::HeaderMap;

    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), args()).await;
    let (_, key) = pipeline
        .registry
        .create_tenant("fabrikam", "Fabrikam")
        .await
        .unwrap();
    pipeline
        .registry
        .provision("fabrikam", vec![device("d1", "b1")])
        .await
        .unwrap();

    // The tenant's webhook: a server that keeps what it is sent.
    let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received_tx = received_tx.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let _ =
                    received_tx.send((header("x-weir-signature"), header("x-weir-event-id"), body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let base = pipeline.url();
    let client = reqwest::Client::new();
    let set: Value = client
        .put(base.join("v1/webhook").unwrap())
        .bearer_auth(&key)
        .json(&json!({"url": format!("http://{hook_addr}/hook")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = set["secret"].as_str().unwrap().to_owned();
    let rule = client
        .put(base.join("v1/alert-rules/too-hot").unwrap())
        .bearer_auth(&key)
        .json(&json!({
            "name": "Too hot", "severity": "critical",
            "scope": {"building": "b1", "level": "device"},
            "condition": {"type": "threshold", "measure": "temperature", "op": "above", "value": 40}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(rule.status(), 200, "{:?}", rule.text().await);
    // The processor reads rules about once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let now_ms = chrono::Utc::now().timestamp_millis();
    for (seq, temperature) in [(1, 21.0), (2, 45.5), (3, 47.0), (4, 22.0)] {
        let reading =
            json!({"seq": seq, "time": now_ms - 10_000 + seq * 1000, "temperature": temperature});
        assert_eq!(post(&client, &base, "d1", &reading).await.status(), 202);
    }

    // Delivered: one raised, one cleared, each signed with the tenant's secret.
    let mut events = Vec::new();
    while events.len() < 2 {
        let (signature, id, body) = tokio::time::timeout(Duration::from_secs(20), received.recv())
            .await
            .expect("the webhook is called within 20 s")
            .unwrap();
        let expected =
            weir_processor::alerts::webhook::signature(secret.as_bytes(), &body).unwrap();
        assert_eq!(signature.as_deref(), Some(expected.as_str()));
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(id.as_deref(), event["id"].as_str());
        events.push(event);
    }
    assert_eq!(events[0]["state"], "raised", "{events:?}");
    assert_eq!(events[0]["value"], 45.5);
    assert_eq!(events[0]["subject"]["device"], "d1");
    assert_eq!(events[1]["state"], "cleared", "{events:?}");
    assert_eq!(events[1]["rule"], "too-hot");

    // Listed by the API: nothing active any more, both events in the history.
    let list = |state: &str| {
        client
            .get(base.join(&format!("v1/alerts?state={state}")).unwrap())
            .bearer_auth(&key)
            .send()
    };
    let mut all = Value::Null;
    for _ in 0..50 {
        all = list("all").await.unwrap().json().await.unwrap();
        if all["alerts"].as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all["alerts"].as_array().map(Vec::len), Some(2), "{all}");
    let active: Value = list("active").await.unwrap().json().await.unwrap();
    assert_eq!(
        active["alerts"].as_array().map(Vec::len),
        Some(0),
        "{active}"
    );
    pipeline.stop().await.unwrap();
}

/// The paths the code routes (`.route("PATH", ...)` in the crates that serve HTTP).
fn routed_paths() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices(".route(") {
                    let rest = text[at + ".route(".len()..].trim_start();
                    if let Some(quoted) = rest.strip_prefix('"') {
                        let end = quoted.find('"').unwrap();
                        out.insert(quoted[..end].to_owned());
                    }
                }
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = std::collections::BTreeSet::new();
    for dir in ["src", "ingest/src", "processor/src", "sinks/src"] {
        walk(&root.join(dir), &mut out);
    }
    out
}

/// `GET /v1/openapi.json` describes every route and method the process serves, and no other:
/// every path in the code is in the document, every documented operation is routed (it answers
/// anything but the router's `no_route` or 405), and every method the document leaves out of a
/// path is refused with 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = start(dir.path(), args()).await;
    let base = pipeline.url();
    let answer = reqwest::get(base.join("v1/openapi.json").unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let document: Value = answer.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        documented,
        routed_paths(),
        "documented paths = routed paths"
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let methods = ["get", "post", "put", "patch", "delete"];
    for (path, item) in paths {
        let concrete = path
            .replace("{slot}", "primary")
            .replace("{network}", "chirpstack")
            .replace("{id}", "no-such-thing");
        let url = base.join(concrete.trim_start_matches('/')).unwrap();
        for method in methods {
            let operation = item.get(method);
            if let Some(operation) = operation {
                assert!(
                    operation["operationId"].is_string() && operation["responses"].is_object(),
                    "{method} {path}: operationId and responses"
                );
            }
            let request = client
                .request(method.to_uppercase().parse().unwrap(), url.clone())
                .bearer_auth("test-token")
                .header("content-type", "application/json")
                .body("{}");
            let answer = match request.send().await {
                Ok(answer) => answer,
                // A stream that stays open: routed.
                Err(e) if e.is_timeout() => {
                    assert!(operation.is_some(), "{method} {path} is not documented");
                    continue;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            };
            let status = answer.status().as_u16();
            let body = answer.text().await.unwrap_or_default();
            let unrouted = status == 405 || (status == 404 && body.contains("no_route"));
            match operation {
                Some(_) => assert!(
                    !unrouted,
                    "{method} {path} is documented, not routed: {status} {body}"
                ),
                None => assert_eq!(
                    status, 405,
                    "{method} {path} is routed, not documented: {body}"
                ),
            }
        }
    }
    pipeline.stop().await.unwrap();
}
