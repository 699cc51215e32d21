//! Extractors whose rejections are problem+json: JSON bodies, query strings, pagination.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use switchboard_core::store::PageRequest;

use crate::ApiError;

/// `Json<T>` with problem+json rejections (400 syntax, 413 too large, 415 content type,
/// 422 with the field that is wrong).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| ApiJson(j.0))
            .map_err(ApiError::from)
    }
}

/// `Query<T>` with problem+json rejections.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(ApiError::from)
    }
}

/// `?limit=` (default 50, at most 500) and `?cursor=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Pagination {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl Pagination {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.limit {
            None => 50,
            Some(0) => return Err(ApiError::bad_request("limit must be between 1 and 500")),
            Some(n) => n.min(500),
        };
        Ok(PageRequest {
            limit,
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }
}
