//! Object stores for lakes that are not a local directory: `memory://`, Amazon S3 and
//! S3-compatible stores, Azure Blob Storage (and ADLS Gen2), Google Cloud Storage.
//!
//! | URL | Store |
//! |---|---|
//! | `s3://bucket/prefix`, `s3a://…` | S3 or an S3-compatible store (MinIO, R2, Ceph, …) |
//! | `az://container/prefix`, `abfs[s]://container@account.dfs.core.windows.net/prefix`, `adl://`, `azure://` | Azure Blob Storage |
//! | `gs://bucket/prefix` | Google Cloud Storage |
//!
//! Credentials and settings are read from the usual environment variables first (`AWS_*`,
//! `AZURE_*`, `GOOGLE_*`: each store's `from_env`), then from the lake options
//! (`--lake-option KEY=VALUE`), which win. Keys are the object_store crate's configuration keys
//! (`aws_endpoint`, `aws_access_key_id`, `azure_storage_account_name`,
//! `google_service_account`, `allow_http`, `timeout`, …); a key the store does not know is an
//! error, not something silently dropped.
//!
//! Delta commits create the next log entry only if it does not exist yet (a conditional
//! put): that, not a lock, is what keeps two writers from overwriting each other's commit.
//! S3 does it with `If-None-Match` (AWS since 2024, MinIO, R2), Azure with `If-None-Match`,
//! GCS with a generation precondition. A store that cannot is refused at the first commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, Once};

use deltalake::DeltaResult;
use deltalake::logstore::{LogStore, LogStoreFactory, StorageConfig, default_logstore};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use url::Url;

use super::LakeError;

/// The cloud stores a lake URL can name, by scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Azure,
    Gcs,
}

/// Every scheme a lake URL can have, for messages.
pub const SCHEMES: &str = "file, memory, s3, s3a, az, abfs, abfss, adl, azure, gs";

impl Cloud {
    const SCHEMES: [(&'static str, Cloud); 8] = [
        ("s3", Cloud::S3),
        ("s3a", Cloud::S3),
        ("az", Cloud::Azure),
        ("abfs", Cloud::Azure),
        ("abfss", Cloud::Azure),
        ("adl", Cloud::Azure),
        ("azure", Cloud::Azure),
        ("gs", Cloud::Gcs),
    ];

    pub fn of_scheme(scheme: &str) -> Option<Cloud> {
        Cloud::SCHEMES
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, cloud)| *cloud)
    }

    fn name(self) -> &'static str {
        match self {
            Cloud::S3 => "S3",
            Cloud::Azure => "Azure",
            Cloud::Gcs => "GCS",
        }
    }
}

/// The store at the root of a cloud lake URL (the bucket or container), configured from the
/// environment and then `options`.
pub fn cloud_store(
    cloud: Cloud,
    url: &Url,
    options: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>, LakeError> {
    register_log_stores();
    let location = url.as_str();
    let unknown = |key: &str| LakeError::UnknownOption {
        store: cloud.name(),
        key: key.to_owned(),
    };
    let failed = |e: object_store::Error| LakeError::Store {
        url: location.to_owned(),
        message: e.to_string(),
    };
    Ok(match cloud {
        Cloud::S3 => {
            let builder = AmazonS3Builder::from_env().with_url(location);
            let builder = with_options(builder, options, |b, k, v| b.with_config(k, v), unknown)?;
            Arc::new(builder.build().map_err(failed)?)
        }
        Cloud::Azure => {
            let builder = MicrosoftAzureBuilder::from_env().with_url(location);
            let builder = with_options(builder, options, |b, k, v| b.with_config(k, v), unknown)?;
            Arc::new(builder.build().map_err(failed)?)
        }
        Cloud::Gcs => {
            let builder = GoogleCloudStorageBuilder::from_env().with_url(location);
            let builder = with_options(builder, options, |b, k, v| b.with_config(k, v), unknown)?;
            Arc::new(builder.build().map_err(failed)?)
        }
    })
}

/// `builder` with each option set, its key read as the store's configuration key `K`.
fn with_options<B, K: FromStr>(
    builder: B,
    options: &[(String, String)],
    set: impl Fn(B, K, &str) -> B,
    unknown: impl Fn(&str) -> LakeError,
) -> Result<B, LakeError> {
    options.iter().try_fold(builder, |builder, (key, value)| {
        let key = K::from_str(key).map_err(|_| unknown(key))?;
        Ok(set(builder, key, value))
    })
}

/// The store of a `memory://` lake: one per URL per process, so that the sinks and SQL of one
/// process see the same data.
pub fn memory_store(url: &Url) -> Arc<dyn ObjectStore> {
    static MEMORY_LAKES: LazyLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> =
        LazyLock::new(Default::default);
    let mut lakes = MEMORY_LAKES.lock().unwrap_or_else(|e| e.into_inner());
    lakes
        .entry(url.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// Parses `KEY=VALUE` lake options.
pub fn parse_options(options: &[String]) -> Result<Vec<(String, String)>, LakeError> {
    options
        .iter()
        .map(|option| match option.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_ascii_lowercase(), value.to_owned()))
            }
            _ => Err(LakeError::MalformedOption(option.clone())),
        })
        .collect()
}

/// Delta finds the log store of a table by its URL's scheme, and knows only `file` and
/// `memory` unless told. The cloud schemes get Delta's default log store, whose commits are
/// conditional puts on the store weir built.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = deltalake::logstore::logstore_factories();
        for (scheme, _) in Cloud::SCHEMES {
            let url = Url::parse(&format!("{scheme}://")).expect("a valid scheme");
            factories
                .entry(url)
                .or_insert_with(|| Arc::new(ConditionalPutLogStore));
        }
    });
}

struct ConditionalPutLogStore;

impl LogStoreFactory for ConditionalPutLogStore {
    fn with_options(
        &self,
        prefixed_store: Arc<dyn ObjectStore>,
        root_store: Arc<dyn ObjectStore>,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_key_value_pairs() {
        let parsed = parse_options(&["AWS_ENDPOINT=http://127.0.0.1:9000".into()]).unwrap();
        assert_eq!(
            parsed,
            [("aws_endpoint".into(), "http://127.0.0.1:9000".into())]
        );
        let err = parse_options(&["no-equals-sign".into()]).unwrap_err();
        assert!(err.to_string().contains("no-equals-sign"), "{err}");
    }

    #[test]
    fn an_unknown_option_names_the_store_and_the_key() {
        let url = Url::parse("s3://bucket/lake/").unwrap();
        let options = [("aws_no_such_key".to_owned(), "1".to_owned())];
        let err = cloud_store(Cloud::S3, &url, &options).err().unwrap();
        assert_eq!(
            err.to_string(),
            "`aws_no_such_key` is not a setting of the S3 store"
        );
    }

    #[test]
    fn each_cloud_scheme_builds_its_store() {
        let cases = [
            ("s3://bucket/lake/", vec![("aws_region", "eu-west-1")]),
            (
                "az://container/lake/",
                vec![
                    ("azure_storage_account_name", "account"),
                    ("azure_storage_account_key", "a2V5"),
                ],
            ),
            ("gs://bucket/lake/", vec![("google_skip_signature", "true")]),
        ];
        for (url, options) in cases {
            let url = Url::parse(url).unwrap();
            let cloud = Cloud::of_scheme(url.scheme()).unwrap();
            let options: Vec<_> = options
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let store = cloud_store(cloud, &url, &options).unwrap();
            assert!(!store.to_string().is_empty());
        }
    }
}
