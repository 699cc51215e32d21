//! `POST /v1/groups/{id}/import`: contacts from a spreadsheet (.xlsx, .xlsm, .xls, .ods, read
//! with calamine) or a CSV into a group.
//!
//! The first non-empty row is a header when it names a phone column (Phone, Mobile, MSISDN,
//! Number...; Name beside it in any order), else column A is the name and B the phone. Blank
//! rows are skipped; numbers are validated and normalized (national forms read in
//! `?default_region=`); a phone repeated in the file or already a contact counts as existing
//! (and joins the group). `?dry_run=true` answers the same report and writes nothing; the real
//! import is one transaction. 5 MiB at most (413), other files 415, unreadable ones 422.

use std::io::Cursor;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use calamine::{Data, Reader};
use serde::{Deserialize, Serialize};
use switchboard_core::store::NewContact;

use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::{ApiError, ApiState};

/// The largest file imported.
pub const MAX_IMPORT_BYTES: usize = 5 << 20;
/// Rows shown in the preview.
const PREVIEW_ROWS: usize = 100;

const NAME_HEADERS: &[&str] = &[
    "name",
    "names",
    "full name",
    "fullname",
    "contact",
    "contact name",
    "customer",
    "first name",
];
const PHONE_HEADERS: &[&str] = &[
    "phone",
    "phone number",
    "phonenumber",
    "phone no",
    "mobile",
    "mobile number",
    "mobile no",
    "msisdn",
    "number",
    "tel",
    "telephone",
    "cell",
    "cellphone",
    "cell phone",
    "whatsapp",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ImportQuery {
    /// Report what the import would do, write nothing.
    pub dry_run: Option<bool>,
    /// ISO 3166 code for numbers written in national form ("0711 000 001").
    pub default_region: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub dry_run: bool,
    pub created: usize,
    pub existing: usize,
    /// Blank rows.
    pub skipped: usize,
    pub errors: Vec<RowError>,
    /// The first rows as read: `new`, `existing` (a contact has the phone) or `duplicate`
    /// (an earlier row has it).
    pub preview: Vec<PreviewRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// The row number in the file, from 1.
    pub row: usize,
    pub value: String,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewRow {
    pub row: usize,
    pub name: Option<String>,
    pub phone: String,
    pub status: &'static str,
}

/// Imports contacts into the group (see the module docs).
#[utoipa::path(post, path = "/v1/groups/{id}/import", tag = "groups", params(ImportQuery),
    request_body(content_type = "multipart/form-data", description = "`file`: .xlsx, .xls, .ods or .csv"),
    responses((status = 200, body = ImportResult), (status = 413, body = crate::problem::Problem),
        (status = 415, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)),
    security(("bearer" = [])))]
pub async fn import(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<ImportResult>, ApiError> {
    // Read in the caller's scope: the admin token acts for the group's own tenant.
    let tenant = s.store.get_group(&caller.scope, &id).await?.tenant;
    let region = match q.default_region.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => Some(switchboard_core::phone::region(r).ok_or_else(|| {
            ApiError::bad_request(format!(
                "default_region: {r:?} is not an ISO 3166 country code"
            ))
        })?),
    };
    let mut multipart = multipart.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let (file_name, bytes) = loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), format!("file: {}", e.body_text())))?
            .ok_or_else(|| {
                ApiError::unprocessable("file: the multipart body has no `file` field")
            })?;
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or("").to_ascii_lowercase();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::new(e.status(), format!("file: {}", e.body_text())))?;
        break (name, bytes);
    };
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("file: {} bytes, over the 5 MiB limit", bytes.len()),
        ));
    }
    let rows = read_rows(&file_name, &bytes)?;
    let plan = plan(&rows, region);
    let phones: Vec<String> = plan
        .contacts
        .iter()
        .filter_map(|(_, c)| c.phone.clone())
        .collect();
    let known = s.store.existing_phones(&tenant, &phones).await?;
    let mut seen = std::collections::HashSet::new();
    let mut preview = Vec::new();
    let (mut new, mut existing) = (0, 0);
    for (row, c) in &plan.contacts {
        let phone = c.phone.clone().unwrap_or_default();
        let status = if !seen.insert(phone.clone()) {
            "duplicate"
        } else if known.contains(&phone) {
            "existing"
        } else {
            "new"
        };
        if status == "new" {
            new += 1;
        } else {
            existing += 1;
        }
        if preview.len() < PREVIEW_ROWS {
            preview.push(PreviewRow {
                row: *row,
                name: c.name.clone(),
                phone,
                status,
            });
        }
    }
    let dry_run = q.dry_run.unwrap_or(false);
    if !dry_run {
        let items: Vec<NewContact> = plan.contacts.into_iter().map(|(_, c)| c).collect();
        let outcome = s.store.import_contacts(&tenant, &id, items).await?;
        new = outcome.created.len();
        existing = outcome.existing.len();
    }
    Ok(Json(ImportResult {
        dry_run,
        created: new,
        existing,
        skipped: plan.skipped,
        errors: plan.errors,
        preview,
    }))
}

/// The file's rows as text: a CSV, or the first sheet of a workbook.
fn read_rows(file_name: &str, bytes: &[u8]) -> Result<Vec<Vec<String>>, ApiError> {
    let zip = bytes.starts_with(b"PK\x03\x04");
    let ole = bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]);
    // By the name's extension, in any case; a name without one goes by the content (a
    // workbook's zip or OLE signature).
    let extension = match file_name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None if zip => "xlsx".to_owned(),
        None if ole => "xls".to_owned(),
        None => String::new(),
    };
    match extension.as_str() {
        "csv" => {
            let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
                .map_err(|_| ApiError::unprocessable("file: the CSV is not UTF-8 text"))?;
            Ok(parse_csv(text))
        }
        "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => {
            if !(zip || ole) {
                return Err(ApiError::unprocessable(format!(
                    "file: {file_name:?} is not a readable .{extension} workbook (corrupt or mislabelled)"
                )));
            }
            let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec()))
                .map_err(|e| {
                    ApiError::unprocessable(format!("file: cannot read the workbook: {e}"))
                })?;
            let range = book
                .worksheet_range_at(0)
                .ok_or_else(|| ApiError::unprocessable("file: the workbook has no sheet"))?
                .map_err(|e| {
                    ApiError::unprocessable(format!("file: cannot read the first sheet: {e}"))
                })?;
            Ok(range.rows().map(|r| r.iter().map(cell).collect()).collect())
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("file: {file_name:?} is not a spreadsheet or CSV (.xlsx, .xls, .ods or .csv)"),
        )),
    }
}

fn cell(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_owned(),
        // Phone numbers typed as numbers come back as floats.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e16 => format!("{}", *f as i64),
        Data::Int(i) => i.to_string(),
        other => other.to_string().trim().to_owned(),
    }
}

/// RFC 4180 CSV: quoted fields with doubled quotes and embedded separators or newlines; a
/// `;` separator when the first line has more of them than commas.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let first = text.lines().next().unwrap_or("");
    let sep = if first.matches(';').count() > first.matches(',').count() {
        ';'
    } else {
        ','
    };
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, c) if c == sep => row.push(std::mem::take(&mut field).trim().to_owned()),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field).trim().to_owned());
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field.trim().to_owned());
        rows.push(row);
    }
    rows
}

struct Plan {
    /// (row number, contact) for every good row.
    contacts: Vec<(usize, NewContact)>,
    skipped: usize,
    errors: Vec<RowError>,
}

fn plan(rows: &[Vec<String>], region: Option<phonenumber::country::Id>) -> Plan {
    let blank = |r: &Vec<String>| r.iter().all(|c| c.trim().is_empty());
    let header_at = rows.iter().position(|r| !blank(r));
    let find = |row: &Vec<String>, names: &[&str]| {
        row.iter().position(|c| {
            // "Phone_Number", "mobile-no" and "Phone  Number" read as "phone number".
            let c = c.trim().to_lowercase().replace(['_', '-'], " ");
            let c = c.split_whitespace().collect::<Vec<_>>().join(" ");
            names.contains(&c.as_str())
        })
    };
    let (name_col, phone_col, data_from) = match header_at {
        Some(h) => match find(&rows[h], PHONE_HEADERS) {
            Some(phone) => (find(&rows[h], NAME_HEADERS), phone, h + 1),
            None => (Some(0), 1, 0),
        },
        None => (Some(0), 1, 0),
    };
    let mut plan = Plan {
        contacts: Vec::new(),
        skipped: 0,
        errors: Vec::new(),
    };
    for (i, r) in rows.iter().enumerate().skip(data_from) {
        let row = i + 1;
        if blank(r) {
            plan.skipped += 1;
            continue;
        }
        let raw = r.get(phone_col).map(|s| s.trim()).unwrap_or("");
        let name = name_col
            .and_then(|c| r.get(c))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if raw.is_empty() {
            plan.errors.push(RowError {
                row,
                value: String::new(),
                error: "no phone number".into(),
            });
            continue;
        }
        match switchboard_core::phone::normalize(raw, region) {
            Ok(phone) => plan.contacts.push((
                row,
                NewContact {
                    name,
                    phone: Some(phone),
                    ..Default::default()
                },
            )),
            Err(error) => plan.errors.push(RowError {
                row,
                value: raw.to_owned(),
                error,
            }),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_reads_quotes_and_semicolons() {
        let rows = parse_csv("Phone;Name\n\"+254 711\";\"Ada \"\"A\"\"\"\n\n");
        assert_eq!(rows[0], vec!["Phone", "Name"]);
        assert_eq!(rows[1], vec!["+254 711", "Ada \"A\""]);
    }

    #[test]
    fn headers_in_any_order_or_columns_a_and_b() {
        let region = switchboard_core::phone::region("KE");
        let rows: Vec<Vec<String>> = [
            vec!["Mobile", "Full Name"],
            vec!["0711000001", "Ada"],
            vec!["", ""],
            vec!["12", "Bad"],
        ]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
        let p = plan(&rows, region);
        assert_eq!(p.contacts.len(), 1);
        assert_eq!(p.contacts[0].1.phone.as_deref(), Some("+254711000001"));
        assert_eq!(p.contacts[0].1.name.as_deref(), Some("Ada"));
        assert_eq!((p.skipped, p.errors.len(), p.errors[0].row), (1, 1, 4));
        let bare: Vec<Vec<String>> = vec![vec!["Bo".into(), "+254711000002".into()]];
        let p = plan(&bare, None);
        assert_eq!(p.contacts[0].1.name.as_deref(), Some("Bo"));
    }
}
