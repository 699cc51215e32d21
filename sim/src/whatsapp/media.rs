//! Media on the simulated Cloud API: uploads (`POST /{phone_number_id}/media`, multipart),
//! metadata (`GET /{media_id}`, which mints a download URL valid 5 minutes on the simulator's
//! clock), downloads (`GET /media-download/<opaque>` with the owner's Bearer token) and
//! deletion (`DELETE /{media_id}`).
//!
//! A media object belongs to the phone numbers that uploaded or received it; media added with
//! [`WhatsAppSim::add_media`](super::WhatsAppSim::add_media) and not yet sent to anyone may be
//! used by every phone number.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::WhatsAppSim;
use super::error::GraphError;
use super::ids;

/// How long a download URL from `GET /{media_id}` works.
const URL_LIFETIME: Duration = Duration::from_secs(300);

/// One stored media object.
#[derive(Debug, Clone)]
pub(crate) struct StoredMedia {
    pub bytes: Bytes,
    pub mime: String,
    sha256: Vec<u8>,
    /// Phone number ids that may use it; empty: all.
    owners: HashSet<String>,
}

impl StoredMedia {
    /// As the media endpoint shows it: lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(&self.sha256)
    }

    /// As inbound webhooks show it: standard base64.
    pub fn sha256_base64(&self) -> String {
        STANDARD.encode(&self.sha256)
    }

    fn usable_by(&self, phone_number_id: &str) -> bool {
        self.owners.is_empty() || self.owners.contains(phone_number_id)
    }
}

#[derive(Debug)]
struct DownloadUrl {
    media_id: String,
    /// On the simulator's clock.
    expires: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct MediaStore {
    media: HashMap<String, StoredMedia>,
    urls: HashMap<String, DownloadUrl>,
}

impl MediaStore {
    /// Stores bytes; `owner` None makes them usable by every phone number.
    pub fn add(&mut self, bytes: Bytes, mime: &str, owner: Option<&str>) -> String {
        let id = ids::numeric_id();
        let sha256 = Sha256::digest(&bytes).to_vec();
        self.media.insert(
            id.clone(),
            StoredMedia {
                bytes,
                mime: mime.to_owned(),
                sha256,
                owners: owner.map(str::to_owned).into_iter().collect(),
            },
        );
        id
    }

    pub fn get(&self, id: &str) -> Option<&StoredMedia> {
        self.media.get(id)
    }

    /// The media if `phone_number_id` may use it.
    pub fn usable(&self, id: &str, phone_number_id: &str) -> Option<&StoredMedia> {
        self.media.get(id).filter(|m| m.usable_by(phone_number_id))
    }

    /// A user sent the media to `phone_number_id`, which may now use it too.
    pub fn share(&mut self, id: &str, phone_number_id: &str) {
        if let Some(media) = self.media.get_mut(id)
            && !media.owners.is_empty()
        {
            media.owners.insert(phone_number_id.to_owned());
        }
    }

    fn mint_url(&mut self, media_id: &str, now: Instant) -> String {
        self.urls.retain(|_, url| url.expires > now);
        let opaque = ids::opaque();
        self.urls.insert(
            opaque.clone(),
            DownloadUrl {
                media_id: media_id.to_owned(),
                expires: now + URL_LIFETIME,
            },
        );
        opaque
    }

    fn resolve(&self, opaque: &str, now: Instant) -> Option<&StoredMedia> {
        let url = self.urls.get(opaque).filter(|u| u.expires > now)?;
        self.media.get(&url.media_id)
    }
}

/// Largest upload Meta accepts for a MIME type, or None if it does not accept the type.
fn size_limit(mime: &str) -> Option<usize> {
    const MB: usize = 1024 * 1024;
    match mime {
        "image/jpeg" | "image/png" => Some(5 * MB),
        "image/webp" => Some(500 * 1024),
        "video/mp4" | "video/3gpp" => Some(16 * MB),
        m if m.starts_with("audio/") => Some(16 * MB),
        m if m.starts_with("text/") || m.starts_with("application/") => Some(100 * MB),
        _ => None,
    }
}

/// `POST /{phone_number_id}/media`: stores a multipart `file` for the phone number.
pub(super) async fn upload(sim: &WhatsAppSim, phone_number_id: &str, request: Request) -> Response {
    match read_upload(request).await {
        Ok((bytes, mime)) => {
            let id = sim.world().media.add(bytes, &mime, Some(phone_number_id));
            axum::Json(json!({ "id": id })).into_response()
        }
        Err(error) => sim.answer_error(error),
    }
}

async fn read_upload(request: Request) -> Result<(Bytes, String), GraphError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|_| GraphError::invalid_parameter("Request must be multipart/form-data"))?;
    let (mut product, mut declared, mut file) = (None, None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return Err(GraphError::invalid_parameter("Unable to read the upload")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let content_type = field.content_type().map(str::to_owned);
        let data = field
            .bytes()
            .await
            .map_err(|_| GraphError::invalid_parameter("Unable to read the upload"))?;
        match name.as_str() {
            "messaging_product" => product = Some(String::from_utf8_lossy(&data).into_owned()),
            "type" => declared = Some(String::from_utf8_lossy(&data).into_owned()),
            "file" => file = Some((data, content_type)),
            _ => {}
        }
    }
    match product.as_deref() {
        Some("whatsapp") => {}
        Some(other) => {
            return Err(GraphError::invalid_parameter(format!(
                "Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."
            )));
        }
        None => return Err(GraphError::required_parameter("messaging_product")),
    }
    let (bytes, part_type) = file.ok_or_else(|| GraphError::required_parameter("file"))?;
    let mime = declared
        .filter(|t| !t.is_empty())
        .or(part_type)
        .ok_or_else(|| GraphError::required_parameter("type"))?
        .to_ascii_lowercase();
    let limit = size_limit(&mime).ok_or_else(|| {
        GraphError::invalid_parameter(format!("Param file has an unsupported type '{mime}'."))
    })?;
    if bytes.len() > limit {
        return Err(GraphError::invalid_parameter(format!(
            "Param file must be at most {limit} bytes for type {mime}."
        )));
    }
    Ok((bytes, mime))
}

/// `GET /{media_id}`: the metadata and a fresh download URL.
pub(super) fn metadata(sim: &WhatsAppSim, media_id: &str, phone_number_id: &str) -> Option<Value> {
    let mut world = sim.world();
    let now = world.sim_now();
    let (mime, sha256, size) = {
        let media = world.media.usable(media_id, phone_number_id)?;
        (media.mime.clone(), media.sha256_hex(), media.bytes.len())
    };
    let opaque = world.media.mint_url(media_id, now);
    Some(json!({
        "messaging_product": "whatsapp",
        "url": format!("{}/media-download/{opaque}", sim.base_url()),
        "mime_type": mime,
        "sha256": sha256,
        "file_size": size,
        "id": media_id,
    }))
}

/// `DELETE /{media_id}`: true if the media existed and the phone number could use it.
pub(super) fn delete(sim: &WhatsAppSim, media_id: &str, phone_number_id: &str) -> bool {
    let mut world = sim.world();
    if world.media.usable(media_id, phone_number_id).is_none() {
        return false;
    }
    world.media.media.remove(media_id);
    true
}

/// `GET /media-download/<opaque>`: the bytes, for a Bearer token of a phone number that may
/// use the media.
pub(super) fn download(sim: &WhatsAppSim, opaque: &str, token: Option<&str>) -> Response {
    let world = sim.world();
    let phones = match world.authenticate(token) {
        Ok(phones) => phones,
        Err(error) => return error.into_response(),
    };
    let Some(media) = world.media.resolve(opaque, world.sim_now()) else {
        return (axum::http::StatusCode::NOT_FOUND, "URL signature expired").into_response();
    };
    if !phones.iter().any(|p| media.usable_by(p)) {
        return GraphError::invalid_token().into_response();
    }
    ([(CONTENT_TYPE, media.mime.clone())], media.bytes.clone()).into_response()
}
