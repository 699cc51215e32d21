//! Who is calling: a tenant API key (sees its own tenant only) or the admin token.
//!
//! Keys arrive as `Authorization: Bearer <key>` (or `?access_token=` on the feed, for
//! browsers). Only SHA-256 digests are stored; lookups are cached for a few seconds and the
//! admin token is compared in constant time. An admin request acts for the tenant named in
//! `X-Switchboard-Tenant`, or across tenants where an endpoint allows it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use switchboard_core::Store;
use switchboard_core::secret::{Secret, hash_api_key};
use switchboard_core::store::Scope;

use crate::{ApiError, ApiState};

pub const TENANT_HEADER: &str = "x-switchboard-tenant";
const CACHE_TTL: Duration = Duration::from_secs(5);

/// Resolves presented credentials to a caller.
pub struct Authenticator {
    store: Arc<Store>,
    admin_token: Option<Secret>,
    cache: Mutex<HashMap<String, (String, Instant)>>,
    /// Requests per tenant key (the admin token is not limited).
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl Authenticator {
    pub fn new(store: Arc<Store>, admin_token: Option<Secret>) -> Self {
        Authenticator {
            store,
            admin_token,
            cache: Mutex::new(HashMap::new()),
            limiter: None,
        }
    }

    /// Limits each tenant's API requests to `rate` (429 with Retry-After beyond).
    pub fn with_tenant_rate(mut self, rate: switchboard_core::rate::Rate) -> Self {
        self.limiter = Some(governor::RateLimiter::keyed(rate.quota()));
        self
    }

    /// Refuses the request when the tenant is over its rate.
    fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        let (Some(limiter), Scope::Tenant(t), false) = (&self.limiter, &caller.scope, caller.admin)
        else {
            return Ok(());
        };
        match limiter.check_key(t) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::{Clock, DefaultClock};
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut e = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too many requests for this tenant; retry after the Retry-After seconds",
                );
                e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                Err(e)
            }
        }
    }

    /// Drops cached key lookups (after a key is revoked).
    pub fn forget_keys(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub async fn authenticate(
        &self,
        token: &str,
        tenant_header: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if let Some(admin) = &self.admin_token
            && admin.matches(token.as_bytes())
        {
            return Ok(match tenant_header {
                Some(t) => {
                    self.store
                        .get_tenant(t)
                        .await
                        .map_err(|_| ApiError::not_found(format!("tenant {t:?} does not exist")))?;
                    Caller {
                        scope: Scope::Tenant(t.to_string()),
                        admin: true,
                    }
                }
                // With a single tenant, every tenant's data is that tenant's: the admin
                // acts for it without naming it.
                None => match self.store.only_tenant().await {
                    Ok(Some(only)) => Caller {
                        scope: Scope::Tenant(only),
                        admin: true,
                    },
                    _ => Caller {
                        scope: Scope::All,
                        admin: true,
                    },
                },
            });
        }
        let hash = hash_api_key(token);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&hash)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(t, _)| t.clone())
        };
        let tenant = match cached {
            Some(t) => t,
            None => {
                let t = self
                    .store
                    .tenant_for_key_hash(&hash)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))?;
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (t.clone(), Instant::now()));
                t
            }
        };
        if let Some(h) = tenant_header
            && h != tenant
        {
            return Err(ApiError::forbidden(
                "an API key acts for its own tenant only",
            ));
        }
        Ok(Caller {
            scope: Scope::Tenant(tenant),
            admin: false,
        })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    pub admin: bool,
}

impl Caller {
    /// The tenant this request acts for; admin requests on tenant-only endpoints must name one.
    pub fn tenant(&self) -> Result<&str, ApiError> {
        self.scope.tenant().ok_or_else(|| {
            ApiError::bad_request(format!(
                "this endpoint acts for one tenant: name it with the {TENANT_HEADER} header"
            ))
        })
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint needs the admin token"))
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn query_token(parts: &Parts) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "access_token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        // Already authenticated (and admitted) by the idempotency layer.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let from_query;
        let token = match bearer(parts) {
            Some(t) => t,
            None if parts.uri.path() == "/v1/feed" => {
                from_query = query_token(parts);
                from_query.as_deref().ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing credentials: send Authorization: Bearer <key> or ?access_token=",
                    )
                })?
            }
            None => {
                return Err(ApiError::unauthorized(
                    "missing credentials: send Authorization: Bearer <key>",
                ));
            }
        };
        let tenant = parts
            .headers
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok());
        let caller = state.auth.authenticate(token, tenant).await?;
        state.auth.admit(&caller)?;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(percent_decode("sk_a%2Fb%3D"), "sk_a/b=");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
