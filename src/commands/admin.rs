//! `weir tenants`, `weir buildings` and `weir devices`: the admin API from the command line.
//!
//! Every command is one HTTP call to a running weir (`--server`), authenticated by `--token`:
//! the operator token (which must name the tenant with `--tenant`) or a tenant's API key. The
//! answer is printed as JSON; an error answer is printed to stderr with its code, and the
//! command exits non-zero. `weir devices token` is the exception: it makes a SAS token
//! offline, from the device's key, as IoT Hub tools do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

/// How to reach the admin API.
#[derive(Debug, Clone, Args)]
pub struct Server {
    /// Base URL of a running weir.
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:8080/",
        global = true
    )]
    pub server: url::Url,

    /// A tenant API key, or the operator token. Default: the operator token in
    /// `weir-data/operator-token`, when readable.
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// The tenant to act on, when the token is the operator's.
    #[arg(long, env = "WEIR_TENANT", global = true)]
    pub tenant: Option<String>,
}

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    server: Server,
    #[command(subcommand)]
    command: TenantsCommand,
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant (operator only); prints its API key, shown this once.
    Create {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tenants (the operator sees all, a tenant itself).
    List,
    /// Replace one of a tenant's two API keys; prints the new one.
    RotateKey {
        id: String,
        #[arg(long, default_value = "primary")]
        slot: String,
    },
}

#[derive(Debug, Args)]
pub struct BuildingsArgs {
    #[command(flatten)]
    server: Server,
    #[command(subcommand)]
    command: BuildingsCommand,
}

#[derive(Debug, Subcommand)]
enum BuildingsCommand {
    /// Create or replace a building and its floor plan.
    Put {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// A floor and its rooms, `FLOOR=ROOM,ROOM,…`; repeat for each floor.
        #[arg(long = "floor")]
        floors: Vec<String>,
    },
    Get {
        id: String,
    },
    /// Delete a building no device is placed in.
    Delete {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    server: Server,
    #[command(subcommand)]
    command: DevicesCommand,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Provision a device; prints it with its primary and secondary keys.
    Create {
        id: String,
        #[arg(long)]
        building: String,
        #[arg(long)]
        floor: Option<String>,
        #[arg(long)]
        room: Option<String>,
        /// Device model; for LoRaWAN devices it picks the payload driver (see
        /// `docs/protocols.md`).
        #[arg(long)]
        model: Option<String>,
        /// LoRaWAN DevEUI (16 hex digits), for uplinks pushed by a network server.
        #[arg(long)]
        dev_eui: Option<String>,
        /// `registered` (must be enabled before it sends), `enabled` (the default), `disabled`.
        #[arg(long)]
        state: Option<String>,
        /// A tag, `NAME=VALUE`; repeat for several.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Create the building if it does not exist.
        #[arg(long)]
        create_building: bool,
    },
    /// Import devices from a JSON array or a CSV file (by its `.csv` extension): columns `id`,
    /// `building`, and any of `floor`, `room`, `model`, `state`, `primary_key`,
    /// `secondary_key`, `tags` (`name=value;…`).
    Import {
        file: PathBuf,
        /// Replace devices that exist instead of failing.
        #[arg(long)]
        upsert: bool,
        /// Create the buildings the devices name when they do not exist.
        #[arg(long)]
        create_buildings: bool,
    },
    /// List devices, in id order, a page at a time (`--all` follows every page).
    List {
        #[arg(long)]
        building: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// `NAME:VALUE`
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        all: bool,
    },
    Get {
        id: String,
    },
    /// Move a device or change its model or tags.
    Update {
        id: String,
        #[arg(long)]
        building: Option<String>,
        #[arg(long)]
        floor: Option<String>,
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// LoRaWAN DevEUI (16 hex digits).
        #[arg(long)]
        dev_eui: Option<String>,
        /// Only if the device is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    /// Revoke a device for good: it can never send again under this id until deleted.
    Revoke {
        id: String,
    },
    /// Replace one of the device's keys by a fresh one; prints the device.
    RotateKey {
        id: String,
        #[arg(long, default_value = "primary")]
        slot: String,
    },
    Delete {
        id: String,
    },
    /// Print an IoT Hub SAS token for a device, made offline from its key.
    Token {
        #[arg(long)]
        device: String,
        /// The device's key (base64), primary or secondary.
        #[arg(long, env = "WEIR_DEVICE_KEY", hide_env_values = true)]
        key: String,
        /// How long the token is valid.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
        /// Host name in the token's resource URI (`{host}/devices/{id}`).
        #[arg(long, default_value = "weir")]
        host: String,
    },
}

struct Client {
    http: reqwest::Client,
    server: Server,
}

impl Client {
    fn new(server: Server) -> Client {
        Client {
            http: reqwest::Client::new(),
            server,
        }
    }

    fn token(&self) -> anyhow::Result<String> {
        match &self.server.token {
            Some(token) => Ok(token.clone()),
            None => std::fs::read_to_string("weir-data/operator-token")
                .map(|t| t.trim().to_owned())
                .context(
                    "no --token given (WEIR_TOKEN), and weir-data/operator-token is not readable",
                ),
        }
    }

    /// Calls the API; the JSON answer, or the API's error as this command's error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<reqwest::Body>,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        self.call_if(method, path, query, body, content_type, None)
            .await
    }

    /// [`Client::call`], conditional on the resource's version (`If-Match`) when given.
    async fn call_if(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<reqwest::Body>,
        content_type: &str,
        if_version: Option<u64>,
    ) -> anyhow::Result<Value> {
        let mut url = self.server.server.join(path)?;
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(tenant) = &self.server.tenant {
                pairs.append_pair("tenant", tenant);
            }
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(self.token()?);
        if let Some(version) = if_version {
            request = request.header("if-match", version.to_string());
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or(&text);
            anyhow::bail!("{status} {code}: {message}");
        }
        Ok(value)
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Value,
    ) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(&body)?;
        self.call(method, path, query, Some(body.into()), "application/json")
            .await
    }
}

fn print(value: &Value) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .with_context(|| format!("{what} `{item}` is not `NAME=VALUE`"))?;
            Ok((k.to_owned(), Value::String(v.to_owned())))
        })
        .collect()
}

pub async fn tenants(args: TenantsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args.server);
    let value = match args.command {
        TenantsCommand::Create { id, name } => {
            client
                .json(
                    Method::POST,
                    "v1/tenants",
                    &[],
                    json!({"id": id, "name": name}),
                )
                .await?
        }
        TenantsCommand::List => {
            client
                .call(Method::GET, "v1/tenants", &[], None, "")
                .await?
        }
        TenantsCommand::RotateKey { id, slot } => {
            let path = format!("v1/tenants/{id}/keys/{slot}/rotate");
            client.call(Method::POST, &path, &[], None, "").await?
        }
    };
    print(&value)
}

pub async fn buildings(args: BuildingsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args.server);
    let value = match args.command {
        BuildingsCommand::Put { id, name, floors } => {
            let mut plan = serde_json::Map::new();
            for floor in floors {
                let (floor, rooms) = floor.split_once('=').unwrap_or((&floor, ""));
                let rooms: Vec<&str> = rooms.split(',').filter(|r| !r.is_empty()).collect();
                plan.insert(floor.to_owned(), json!(rooms));
            }
            let body = json!({"name": name, "floors": plan});
            client
                .json(Method::PUT, &format!("v1/buildings/{id}"), &[], body)
                .await?
        }
        BuildingsCommand::Get { id } => {
            let path = format!("v1/buildings/{id}");
            client.call(Method::GET, &path, &[], None, "").await?
        }
        BuildingsCommand::Delete { id } => {
            let path = format!("v1/buildings/{id}");
            client.call(Method::DELETE, &path, &[], None, "").await?;
            json!({"deleted": id})
        }
    };
    print(&value)
}

pub async fn devices(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(args.server);
    let client = &client;
    let state = |id: &str, state: &str| {
        let path = format!("v1/devices/{id}/state");
        let body = json!({"state": state});
        async move { client.json(Method::PUT, &path, &[], body).await }
    };
    let value = match args.command {
        DevicesCommand::Create {
            id,
            building,
            floor,
            room,
            model,
            dev_eui,
            state,
            tags,
            create_building,
        } => {
            let body = json!({
                "id": id, "building": building, "floor": floor, "room": room, "model": model,
                "dev_eui": dev_eui, "state": state, "tags": pairs(&tags, "tag")?,
            });
            let query = [("create_buildings", create_building.to_string())];
            let created = client
                .json(Method::POST, "v1/devices", &query, body)
                .await?;
            created["devices"][0].clone()
        }
        DevicesCommand::Import {
            file,
            upsert,
            create_buildings,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let csv = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            let content_type = if csv { "text/csv" } else { "application/json" };
            let mode = if upsert { "upsert" } else { "create" };
            let query = [
                ("mode", mode.to_owned()),
                ("create_buildings", create_buildings.to_string()),
            ];
            let started = std::time::Instant::now();
            let mut value = client
                .call(
                    Method::POST,
                    "v1/devices/import",
                    &query,
                    Some(bytes.into()),
                    content_type,
                )
                .await?;
            value["seconds"] = json!(started.elapsed().as_secs_f64());
            value
        }
        DevicesCommand::List {
            building,
            state,
            tag,
            limit,
            after,
            all,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(building.map(|b| ("building", b)));
            query.extend(state.map(|s| ("state", s)));
            query.extend(tag.map(|t| ("tag", t)));
            let mut after = after;
            let mut devices = Vec::new();
            loop {
                let mut page_query = query.clone();
                page_query.extend(after.clone().map(|a| ("after", a)));
                let page = client
                    .call(Method::GET, "v1/devices", &page_query, None, "")
                    .await?;
                devices.extend(page["devices"].as_array().cloned().unwrap_or_default());
                after = page["next"].as_str().map(str::to_owned);
                if !all || after.is_none() {
                    break;
                }
            }
            json!({"devices": devices, "next": after})
        }
        DevicesCommand::Get { id } => {
            let path = format!("v1/devices/{id}");
            client.call(Method::GET, &path, &[], None, "").await?
        }
        DevicesCommand::Update {
            id,
            building,
            floor,
            room,
            model,
            dev_eui,
            if_version,
        } => {
            let mut patch = serde_json::Map::new();
            for (name, value) in [
                ("building", building),
                ("floor", floor),
                ("room", room),
                ("model", model),
                ("dev_eui", dev_eui),
            ] {
                if let Some(value) = value {
                    patch.insert(name.into(), json!(value));
                }
            }
            let path = format!("v1/devices/{id}");
            let body = serde_json::to_vec(&Value::Object(patch))?;
            client
                .call_if(
                    Method::PATCH,
                    &path,
                    &[],
                    Some(body.into()),
                    "application/json",
                    if_version,
                )
                .await?
        }
        DevicesCommand::Enable { id } => state(&id, "enabled").await?,
        DevicesCommand::Disable { id } => state(&id, "disabled").await?,
        DevicesCommand::Revoke { id } => state(&id, "revoked").await?,
        DevicesCommand::RotateKey { id, slot } => {
            let path = format!("v1/devices/{id}/keys/{slot}/rotate");
            client.call(Method::POST, &path, &[], None, "").await?
        }
        DevicesCommand::Delete { id } => {
            let path = format!("v1/devices/{id}");
            client.call(Method::DELETE, &path, &[], None, "").await?;
            json!({"deleted": id})
        }
        DevicesCommand::Token {
            device,
            key,
            ttl,
            host,
        } => {
            let expiry = chrono::Utc::now().timestamp().max(0) as u64 + ttl.as_secs();
            let token = weir_common::sas::sign(&format!("{host}/devices/{device}"), &key, expiry)
                .context("cannot sign: --key must be the device's base64 key")?;
            println!("{token}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    print(&value)
}
