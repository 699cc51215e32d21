//! Files the simulated Telegram knows: uploads by bots, files users send, remote URLs.
//!
//! A file has a `file_id` (used in API calls), a `file_unique_id`, and a `file_path` under which
//! `GET /file/bot<token>/<file_path>` serves its bytes. Photos are shown in three sizes; the
//! simulator cannot resize images, so the two smaller sizes serve the same bytes as the largest.

use std::collections::HashMap;

use axum::body::Bytes;
use rand::Rng;
use serde_json::{Value, json};

/// One stored file.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub file_id: String,
    pub unique_id: String,
    pub bytes: Bytes,
    pub file_name: Option<String>,
    pub mime: Option<String>,
    pub path: String,
}

/// What a file is used as; decides its id prefix and folder, as Telegram's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Photo,
    Document,
}

/// Displayed photo sizes (width = height), smallest first.
const PHOTO_SIZES: [(u32, &str); 3] = [(90, "-s"), (320, "-m"), (800, "")];

#[derive(Debug, Default)]
pub(crate) struct FileStore {
    files: HashMap<String, StoredFile>,
    by_path: HashMap<String, String>,
    next: u64,
}

impl FileStore {
    /// Stores a file and returns its new `file_id`.
    pub fn add(
        &mut self,
        bytes: Bytes,
        file_name: Option<&str>,
        mime: Option<&str>,
        kind: FileKind,
    ) -> String {
        self.next += 1;
        let n = self.next;
        let (prefix, folder) = match kind {
            FileKind::Photo => ("AgAC", "photos"),
            FileKind::Document => ("BQAC", "documents"),
        };
        let file_id = format!("{prefix}{n:06}{:012x}", rand::rng().random::<u64>() >> 16);
        let path = format!("{folder}/file_{n}.{}", extension(file_name, mime, kind));
        self.insert(StoredFile {
            file_id: file_id.clone(),
            unique_id: format!("AQAD{n:06}"),
            bytes,
            file_name: file_name.map(str::to_owned),
            mime: mime.map(str::to_owned),
            path,
        });
        file_id
    }

    fn insert(&mut self, file: StoredFile) {
        self.by_path.insert(file.path.clone(), file.file_id.clone());
        self.files.insert(file.file_id.clone(), file);
    }

    pub fn get(&self, file_id: &str) -> Option<&StoredFile> {
        self.files.get(file_id)
    }

    pub fn by_path(&self, path: &str) -> Option<&StoredFile> {
        self.by_path.get(path).and_then(|id| self.files.get(id))
    }

    /// `[PhotoSize]` for a stored file, largest (the file itself) last.
    pub fn photo_sizes(&mut self, file_id: &str) -> Option<Value> {
        let original = self.files.get(file_id)?.clone();
        let mut sizes = Vec::with_capacity(PHOTO_SIZES.len());
        for (side, suffix) in PHOTO_SIZES {
            let size = if suffix.is_empty() {
                original.clone()
            } else {
                let id = format!("{}{suffix}", original.file_id);
                match self.files.get(&id) {
                    Some(existing) => existing.clone(),
                    None => {
                        let derived = StoredFile {
                            file_id: id,
                            unique_id: format!("{}{suffix}", original.unique_id),
                            path: format!("{}{suffix}", original.path),
                            ..original.clone()
                        };
                        self.insert(derived.clone());
                        derived
                    }
                }
            };
            sizes.push(json!({
                "file_id": size.file_id,
                "file_unique_id": size.unique_id,
                "width": side,
                "height": side,
                "file_size": size.bytes.len(),
            }));
        }
        Some(Value::Array(sizes))
    }

    /// A `Document` object for a stored file.
    pub fn document(&self, file_id: &str) -> Option<Value> {
        let file = self.files.get(file_id)?;
        let mut doc = json!({
            "file_id": file.file_id,
            "file_unique_id": file.unique_id,
            "file_size": file.bytes.len(),
        });
        if let Some(name) = &file.file_name {
            doc["file_name"] = json!(name);
        }
        if let Some(mime) = &file.mime {
            doc["mime_type"] = json!(mime);
        }
        Some(doc)
    }

    /// The `File` object getFile answers.
    pub fn file_object(&self, file_id: &str) -> Option<Value> {
        let file = self.files.get(file_id)?;
        Some(json!({
            "file_id": file.file_id,
            "file_unique_id": file.unique_id,
            "file_size": file.bytes.len(),
            "file_path": file.path,
        }))
    }
}

fn extension(file_name: Option<&str>, mime: Option<&str>, kind: FileKind) -> String {
    if let Some(ext) = file_name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e)
        && !ext.is_empty()
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return ext.to_ascii_lowercase();
    }
    let from_mime = match mime {
        Some("image/png") => "png",
        Some("image/gif") => "gif",
        Some("image/webp") => "webp",
        Some("application/pdf") => "pdf",
        Some("text/plain") => "txt",
        Some("image/jpeg") => "jpg",
        _ if kind == FileKind::Photo => "jpg",
        _ => "bin",
    };
    from_mime.to_owned()
}
