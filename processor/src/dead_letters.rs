//! The latest dead letters of each tenant, read from `telemetry-dlq`, for
//! `GET /v1/dead-letters`: what a tenant's devices sent that could not be decoded, and why.
//!
//! Every process serving the API reads the whole topic under a consumer group of its own, so
//! that any of them answers for every tenant. Only the latest [`DeadLetters::per_tenant`]
//! letters of each tenant are kept: the topic itself is the full record.
//!
//! - `GET /v1/dead-letters[?tenant=T][&limit=N]`: newest first, at most `limit` (default 100).
//!   A tenant's key sees its own; the operator sees all, or one tenant's with `?tenant=`.
//!   Dead letters of unknown tenant (a bus record whose key is not readable) are the
//!   operator's alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use weir_common::bus::{BusError, Subscription};
use weir_common::http::{ApiError, ApiQuery, Scope, Tokens, bearer_scope};
use weir_schemas::DeadLetter;

/// Letters kept per tenant.
pub const PER_TENANT: usize = 1000;
/// Most letters one answer carries.
const MAX_LIMIT: usize = 1000;

pub struct DeadLetters {
    by_tenant: DashMap<String, VecDeque<DeadLetter>>,
    per_tenant: usize,
}

impl DeadLetters {
    pub fn new(per_tenant: usize) -> Self {
        DeadLetters {
            by_tenant: DashMap::new(),
            per_tenant: per_tenant.max(1),
        }
    }

    pub fn push(&self, letter: DeadLetter) {
        let tenant = letter.tenant.clone().unwrap_or_default();
        let mut letters = self.by_tenant.entry(tenant).or_default();
        letters.push_back(letter);
        if letters.len() > self.per_tenant {
            letters.pop_front();
        }
    }

    /// The newest letters of the tenants `scope` covers (narrowed to `tenant`), newest first.
    pub fn recent(&self, scope: &Scope, tenant: Option<&str>, limit: usize) -> Vec<DeadLetter> {
        let mut out: Vec<DeadLetter> = self
            .by_tenant
            .iter()
            .filter(|e| {
                let t = e.key().as_str();
                let visible = match scope {
                    Scope::Operator => true,
                    Scope::Tenant(own) => !t.is_empty() && own == t,
                };
                visible && tenant.is_none_or(|named| named == t)
            })
            .flat_map(|e| {
                e.value()
                    .iter()
                    .rev()
                    .take(limit)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|l| std::cmp::Reverse(l.received_us));
        out.truncate(limit);
        out
    }

    /// Keeps what arrives on `subscription` (the dead-letter topic) until `stop`.
    pub async fn follow(
        self: Arc<Self>,
        subscription: Box<dyn Subscription>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), BusError> {
        weir_common::bus::follow(
            subscription,
            stop,
            DRAIN,
            |message| match DeadLetter::from_json(&message.value) {
                Ok(letter) => self.push(letter),
                Err(e) => tracing::warn!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %e,
                    "a dead letter is not readable"
                ),
            },
        )
        .await
    }
}

/// How long a stopping reader keeps reading to catch up.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Api {
    letters: Arc<DeadLetters>,
    tokens: Arc<dyn Tokens>,
}

pub fn router(letters: Arc<DeadLetters>, tokens: Arc<dyn Tokens>) -> Router {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .with_state(Api { letters, tokens })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize, Deserialize)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let dead_letters = api.letters.recent(&scope, query.tenant.as_deref(), limit);
    Ok(Json(DeadLetterList { dead_letters }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(tenant: Option<&str>, at: i64) -> DeadLetter {
        let mut l = DeadLetter::new("mqtt", "bad".into(), b"x", at);
        l.tenant = tenant.map(str::to_owned);
        l
    }

    #[test]
    fn tenants_see_their_own_newest_first_within_the_cap() {
        let letters = DeadLetters::new(3);
        for at in 0..5 {
            letters.push(letter(Some("a"), at));
        }
        letters.push(letter(Some("b"), 10));
        letters.push(letter(None, 11));
        let a = Scope::Tenant("a".into());
        let seen: Vec<i64> = letters
            .recent(&a, None, 10)
            .iter()
            .map(|l| l.received_us)
            .collect();
        assert_eq!(seen, [4, 3, 2], "the newest three of its own");
        assert!(letters.recent(&a, Some("b"), 10).is_empty());
        let all = letters.recent(&Scope::Operator, None, 10);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].received_us, 11);
        assert_eq!(letters.recent(&Scope::Operator, Some("b"), 10).len(), 1);
        assert_eq!(letters.recent(&Scope::Operator, None, 2).len(), 2);
    }
}
