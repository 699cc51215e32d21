//! Bot API parameters, from wherever the client put them.
//!
//! Telegram accepts parameters in the query string, as `application/x-www-form-urlencoded`,
//! as `application/json` or as `multipart/form-data` (the only way to upload). [`Params`]
//! merges them into one JSON object (form values stay strings) plus the uploaded files, and
//! its getters accept both typed JSON and the string forms the other encodings carry
//! (`"123"` for a number, a JSON string for `reply_markup`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Form, FromRequest, Multipart, Query, Request};
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use super::error::ApiError;

/// A file sent in a multipart field.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub file_name: String,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// The parameters of one Bot API call.
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: Map<String, Value>,
    uploads: HashMap<String, Upload>,
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let mut params = Params::default();
        if let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri()) {
            params.extend_strings(pairs);
        }
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let bytes = Bytes::from_request(request, state)
                .await
                .map_err(|_| ApiError::bad_request("can't read request body"))?;
            if !bytes.is_empty() {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(map)) => params.values.extend(map),
                    _ => return Err(ApiError::bad_request("can't parse JSON object")),
                }
            }
        } else if content_type.starts_with("multipart/form-data") {
            let mut multipart = Multipart::from_request(request, state)
                .await
                .map_err(|_| ApiError::bad_request("can't parse multipart/form-data"))?;
            params.read_multipart(&mut multipart).await?;
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(pairs) = Form::<Vec<(String, String)>>::from_request(request, state)
                .await
                .map_err(|_| ApiError::bad_request("can't parse form data"))?;
            params.extend_strings(pairs);
        }
        Ok(params)
    }
}

impl Params {
    fn extend_strings(&mut self, pairs: Vec<(String, String)>) {
        for (key, value) in pairs {
            self.values.insert(key, Value::String(value));
        }
    }

    async fn read_multipart(&mut self, multipart: &mut Multipart) -> Result<(), ApiError> {
        let broken = |_| ApiError::bad_request("can't parse multipart/form-data");
        while let Some(field) = multipart.next_field().await.map_err(broken)? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            match field.file_name().map(str::to_owned) {
                Some(file_name) => {
                    let content_type = field.content_type().map(str::to_owned);
                    let bytes = field.bytes().await.map_err(broken)?;
                    let upload = Upload {
                        file_name,
                        content_type,
                        bytes,
                    };
                    self.uploads.insert(name, upload);
                }
                None => {
                    let text = field.text().await.map_err(broken)?;
                    self.values.insert(name, Value::String(text));
                }
            }
        }
        Ok(())
    }

    /// Every parameter as received; uploads appear as `"upload:<filename>"`.
    pub fn as_json(&self) -> Value {
        let mut all = self.values.clone();
        for (name, upload) in &self.uploads {
            all.insert(
                name.clone(),
                Value::String(format!("upload:{}", upload.file_name)),
            );
        }
        Value::Object(all)
    }

    pub fn is_present(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| !v.is_null()) || self.uploads.contains_key(name)
    }

    /// A string parameter (numbers and booleans are given in their text form).
    pub fn str(&self, name: &str) -> Option<String> {
        match self.values.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An integer parameter; `Err` if present but not an integer.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let invalid = || ApiError::bad_request(&format!("invalid {name} specified"));
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.values.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1"),
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// A JSON-valued parameter (object or array), given as JSON or as a string holding JSON.
    pub fn json(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.values.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiError::bad_request(&format!("can't parse {name} JSON object"))),
            Some(other) => Ok(Some(other.clone())),
        }
    }

    /// A list of strings (`allowed_updates`), as a JSON array or a string holding one.
    pub fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.json(name)? {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
            )),
            Some(_) => Err(ApiError::bad_request(&format!("can't parse {name}"))),
        }
    }

    /// `chat_id`: an integer, or a numeric string. `@username` chats are not simulated.
    pub fn chat_id(&self) -> Result<i64, ApiError> {
        if !self.is_present("chat_id") {
            return Err(ApiError::bad_request("chat_id is empty"));
        }
        self.i64("chat_id")
            .ok()
            .flatten()
            .ok_or_else(ApiError::chat_not_found)
    }

    /// A multipart upload: the field itself, or the field named by `attach://<name>`.
    pub fn upload(&self, name: &str) -> Option<&Upload> {
        if let Some(upload) = self.uploads.get(name) {
            return Some(upload);
        }
        let reference = self.str(name)?;
        self.uploads.get(reference.strip_prefix("attach://")?)
    }
}
