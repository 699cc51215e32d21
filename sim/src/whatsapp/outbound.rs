//! The body of `POST /{phone_number_id}/messages`, checked as the Cloud API checks it.
//!
//! [`parse`] turns the JSON into a [`MessagesCall`]: a mark-as-read, or a send whose content
//! passed the documented limits (text ≤ 4096 characters, captions ≤ 1024, 1-3 reply buttons
//! with ids ≤ 256 and titles ≤ 20 characters, lists of ≤ 10 rows, exactly one of `link` / `id`
//! for media...). Failures carry Meta's codes: 100 for unknown or out-of-range parameters,
//! 131008 for a missing nested parameter, 131009 for a value that is not valid.

use serde_json::{Map, Value};

use super::error::GraphError;

/// Message types the Cloud API sends.
const TYPES: [&str; 11] = [
    "audio",
    "contacts",
    "document",
    "image",
    "interactive",
    "location",
    "reaction",
    "sticker",
    "template",
    "text",
    "video",
];

/// Interactive types accepted besides `button` and `list` (checked only for an `action`).
const OTHER_INTERACTIVE: [&str; 7] = [
    "cta_url",
    "flow",
    "location_request_message",
    "product",
    "product_list",
    "catalog_message",
    "address_message",
];

/// A call to the messages endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MessagesCall {
    /// `{"status":"read","message_id":...}`, optionally with a typing indicator.
    MarkRead {
        message_id: String,
    },
    Send(Outbound),
}

/// A send that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outbound {
    /// `to` as the business wrote it (echoed as `contacts[].input`).
    pub to: String,
    /// `to` reduced to digits.
    pub wa_id: String,
    pub kind: String,
    /// `context.message_id`.
    pub context: Option<String>,
    /// A media `id` the message refers to; the caller checks it exists.
    pub media_id: Option<(String, String)>,
}

impl Outbound {
    pub fn is_template(&self) -> bool {
        self.kind == "template"
    }
}

pub(crate) fn parse(body: &Value) -> Result<MessagesCall, GraphError> {
    let Some(body) = body.as_object() else {
        return Err(GraphError::required_parameter("messaging_product"));
    };
    match body.get("messaging_product").and_then(Value::as_str) {
        Some("whatsapp") => {}
        Some(other) => {
            return Err(GraphError::invalid_parameter(format!(
                "Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."
            )));
        }
        None => return Err(GraphError::required_parameter("messaging_product")),
    }
    if let Some(status) = body.get("status") {
        if status.as_str() != Some("read") {
            return Err(GraphError::invalid_parameter(
                "Param status must be one of {READ}.",
            ));
        }
        let message_id =
            text(body, "message_id").ok_or_else(|| GraphError::required_parameter("message_id"))?;
        return Ok(MessagesCall::MarkRead {
            message_id: message_id.to_owned(),
        });
    }
    let to = text(body, "to").ok_or_else(|| GraphError::required_parameter("to"))?;
    let wa_id = normalize_recipient(to)?;
    if let Some(kind) = body.get("recipient_type")
        && !matches!(kind.as_str(), Some("individual" | "group"))
    {
        return Err(GraphError::invalid_parameter(
            "Param recipient_type must be one of {INDIVIDUAL, GROUP}.",
        ));
    }
    let kind = match body.get("type") {
        None => "text",
        Some(value) => value
            .as_str()
            .filter(|t| TYPES.contains(t))
            .ok_or_else(|| {
                GraphError::invalid_parameter(format!(
                    "Param type must be one of {{{}}} - got {value}.",
                    TYPES.join(", ").to_ascii_uppercase()
                ))
            })?,
    };
    let object = body.get(kind).ok_or_else(|| {
        GraphError::missing_parameter(format!("The parameter {kind} is required."))
    })?;
    let object = object.as_object().ok_or_else(|| {
        GraphError::invalid_parameter(format!("Param {kind} must be a JSON object."))
    });
    let context = match body.get("context") {
        None => None,
        Some(context) => Some(
            context
                .get("message_id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    GraphError::missing_parameter(
                        "The parameter context['message_id'] is required.",
                    )
                })?
                .to_owned(),
        ),
    };
    let mut media_id = None;
    match kind {
        "text" => check_text(object?)?,
        "image" | "audio" | "document" | "video" | "sticker" => {
            media_id = check_media(kind, object?)?.map(|id| (kind.to_owned(), id));
        }
        "interactive" => check_interactive(object?)?,
        "template" => check_template(object?)?,
        "location" => check_location(object?)?,
        "reaction" => {
            let reaction = object?;
            text(reaction, "message_id").ok_or_else(|| {
                GraphError::missing_parameter("The parameter reaction['message_id'] is required.")
            })?;
        }
        _ => {
            if body[kind].as_array().is_none_or(|a| a.is_empty()) {
                return Err(GraphError::invalid_parameter(format!(
                    "Param {kind} must be a non-empty array."
                )));
            }
        }
    }
    Ok(MessagesCall::Send(Outbound {
        to: to.to_owned(),
        wa_id,
        kind: kind.to_owned(),
        context,
        media_id,
    }))
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// `+1 555-123 4567` → `15551234567`; 131009 unless 7-15 digits remain.
fn normalize_recipient(to: &str) -> Result<String, GraphError> {
    let rest = to.trim().strip_prefix('+').unwrap_or(to.trim());
    let separators = |c: char| matches!(c, ' ' | '-' | '(' | ')' | '.');
    let digits: String = rest.chars().filter(|c| !separators(*c)).collect();
    if (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(GraphError::value_not_valid(
            "The phone number is malformed: Please use the format: +1234567890.",
        ))
    }
}

/// A length check with Meta's wording.
fn at_most(value: &str, max: usize, name: &str) -> Result<(), GraphError> {
    if value.chars().count() > max {
        Err(GraphError::invalid_parameter(format!(
            "Param {name} must be at most {max} characters long."
        )))
    } else {
        Ok(())
    }
}

fn required<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    name: &str,
) -> Result<&'a str, GraphError> {
    text(object, key)
        .ok_or_else(|| GraphError::missing_parameter(format!("The parameter {name} is required.")))
}

fn check_text(object: &Map<String, Value>) -> Result<(), GraphError> {
    let body = required(object, "body", "text['body']")?;
    at_most(body, 4096, "text['body']")
}

/// Exactly one of `link` and `id`; returns the id.
fn check_media(kind: &str, object: &Map<String, Value>) -> Result<Option<String>, GraphError> {
    let link = text(object, "link");
    let id = text(object, "id");
    let id = match (link, id) {
        (Some(_), Some(_)) => {
            return Err(GraphError::value_not_valid(format!(
                "Param {kind} must contain either 'id' or 'link', not both."
            )));
        }
        (None, None) => {
            return Err(GraphError::missing_parameter(format!(
                "Param {kind} must contain either 'id' or 'link'."
            )));
        }
        (Some(link), None) => {
            if !(link.starts_with("https://") || link.starts_with("http://")) {
                return Err(GraphError::value_not_valid(format!(
                    "Param {kind}['link'] is not a valid URI."
                )));
            }
            None
        }
        (None, Some(id)) => Some(id.to_owned()),
    };
    if let Some(caption) = text(object, "caption") {
        if matches!(kind, "audio" | "sticker") {
            return Err(GraphError::invalid_parameter(format!(
                "Param {kind}['caption'] is not supported for {kind} messages."
            )));
        }
        at_most(caption, 1024, &format!("{kind}['caption']"))?;
    }
    if let Some(filename) = text(object, "filename") {
        at_most(filename, 240, &format!("{kind}['filename']"))?;
    }
    Ok(id)
}

fn check_interactive(object: &Map<String, Value>) -> Result<(), GraphError> {
    let kind = required(object, "type", "interactive['type']")?;
    let action = object.get("action").and_then(Value::as_object);
    let body_text = object
        .get("body")
        .and_then(Value::as_object)
        .and_then(|b| text(b, "text"));
    if let Some(footer) = object
        .get("footer")
        .and_then(Value::as_object)
        .and_then(|f| text(f, "text"))
    {
        at_most(footer, 60, "interactive['footer']['text']")?;
    }
    let missing =
        |name: &str| GraphError::missing_parameter(format!("The parameter {name} is required."));
    match kind {
        "button" => {
            let body = body_text.ok_or_else(|| missing("interactive['body']['text']"))?;
            at_most(body, 1024, "interactive['body']['text']")?;
            let buttons = action
                .and_then(|a| a.get("buttons"))
                .and_then(Value::as_array)
                .ok_or_else(|| missing("interactive['action']['buttons']"))?;
            if buttons.is_empty() || buttons.len() > 3 {
                return Err(GraphError::value_not_valid(
                    "Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3",
                ));
            }
            let mut seen = Vec::new();
            for button in buttons {
                let reply = button
                    .get("reply")
                    .and_then(Value::as_object)
                    .ok_or_else(|| missing("interactive['action']['buttons'][]['reply']"))?;
                let id = required(
                    reply,
                    "id",
                    "interactive['action']['buttons'][]['reply']['id']",
                )?;
                let title = required(
                    reply,
                    "title",
                    "interactive['action']['buttons'][]['reply']['title']",
                )?;
                at_most(id, 256, "interactive['action']['buttons'][]['reply']['id']")?;
                if title.chars().count() > 20 {
                    return Err(GraphError::value_not_valid(
                        "Button title length invalid. Min length: 1, Max length: 20",
                    ));
                }
                if seen.contains(&id) || seen.contains(&title) {
                    return Err(GraphError::value_not_valid(
                        "Button title or id is not unique. Buttons must have unique ids and titles",
                    ));
                }
                seen.extend([id, title]);
            }
            Ok(())
        }
        "list" => {
            let body = body_text.ok_or_else(|| missing("interactive['body']['text']"))?;
            at_most(body, 4096, "interactive['body']['text']")?;
            let action = action.ok_or_else(|| missing("interactive['action']"))?;
            let button = required(action, "button", "interactive['action']['button']")?;
            if button.chars().count() > 20 {
                return Err(GraphError::value_not_valid(
                    "Button title length invalid. Min length: 1, Max length: 20",
                ));
            }
            let sections = action
                .get("sections")
                .and_then(Value::as_array)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("interactive['action']['sections']"))?;
            if sections.len() > 10 {
                return Err(GraphError::value_not_valid(
                    "Too many sections. Max allowed sections: 10",
                ));
            }
            let mut rows_total = 0;
            for section in sections {
                if sections.len() > 1 {
                    let title = section
                        .as_object()
                        .and_then(|s| text(s, "title"))
                        .ok_or_else(|| missing("interactive['action']['sections'][]['title']"))?;
                    at_most(title, 24, "interactive['action']['sections'][]['title']")?;
                }
                let rows = section
                    .get("rows")
                    .and_then(Value::as_array)
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| missing("interactive['action']['sections'][]['rows']"))?;
                rows_total += rows.len();
                for row in rows {
                    let row = row.as_object().ok_or_else(|| missing("rows[]['id']"))?;
                    let id = required(row, "id", "rows[]['id']")?;
                    at_most(id, 200, "rows[]['id']")?;
                    let title = required(row, "title", "rows[]['title']")?;
                    at_most(title, 24, "rows[]['title']")?;
                    if let Some(description) = text(row, "description") {
                        at_most(description, 72, "rows[]['description']")?;
                    }
                }
            }
            if rows_total > 10 {
                return Err(GraphError::value_not_valid(
                    "Invalid rows count. Max allowed rows: 10",
                ));
            }
            Ok(())
        }
        other if OTHER_INTERACTIVE.contains(&other) => {
            action.ok_or_else(|| missing("interactive['action']"))?;
            Ok(())
        }
        other => Err(GraphError::invalid_parameter(format!(
            "Param interactive['type'] must be one of {{BUTTON, LIST, CTA_URL, FLOW, PRODUCT, PRODUCT_LIST, CATALOG_MESSAGE, LOCATION_REQUEST_MESSAGE, ADDRESS_MESSAGE}} - got \"{other}\"."
        ))),
    }
}

fn check_template(object: &Map<String, Value>) -> Result<(), GraphError> {
    let name = required(object, "name", "template['name']")?;
    at_most(name, 512, "template['name']")?;
    let language = object
        .get("language")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            GraphError::missing_parameter("The parameter template['language'] is required.")
        })?;
    required(language, "code", "template['language']['code']")?;
    if let Some(components) = object.get("components")
        && !components.is_array()
    {
        return Err(GraphError::invalid_parameter(
            "Param template['components'] must be an array.",
        ));
    }
    Ok(())
}

fn check_location(object: &Map<String, Value>) -> Result<(), GraphError> {
    for (key, range) in [("latitude", 90.0), ("longitude", 180.0)] {
        let value = object.get(key).ok_or_else(|| {
            GraphError::missing_parameter(format!("The parameter location['{key}'] is required."))
        })?;
        let number = value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()));
        if !number.is_some_and(|n: f64| n.abs() <= range) {
            return Err(GraphError::value_not_valid(format!(
                "Param location['{key}'] is not a valid number."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code(body: Value) -> i64 {
        parse(&body).unwrap_err().code
    }

    #[test]
    fn a_text_defaults_its_type_and_normalizes_the_recipient() {
        let call = parse(&json!({"messaging_product": "whatsapp", "to": "+1 555 123 4567", "text": {"body": "hi"}}))
            .unwrap();
        let MessagesCall::Send(send) = call else {
            panic!("not a send")
        };
        assert_eq!(
            (send.kind.as_str(), send.wa_id.as_str()),
            ("text", "15551234567")
        );
        assert_eq!(send.to, "+1 555 123 4567");
    }

    #[test]
    fn invalid_bodies_get_meta_codes() {
        assert_eq!(
            code(json!({"to": "15551234567", "text": {"body": "x"}})),
            100
        );
        assert_eq!(
            code(json!({"messaging_product": "whatsapp", "text": {"body": "x"}})),
            100
        );
        let base = |extra: Value| {
            let mut body = json!({"messaging_product": "whatsapp", "to": "15551234567"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        assert_eq!(code(base(json!({"type": "telepathy"}))), 100);
        assert_eq!(code(base(json!({"text": {}}))), 131008);
        assert_eq!(code(base(json!({"text": {"body": "x".repeat(4097)}}))), 100);
        assert_eq!(
            code(base(
                json!({"type": "image", "image": {"id": "1", "link": "https://x"}})
            )),
            131009
        );
        assert_eq!(
            code(base(json!({"type": "template", "template": {"name": "t"}}))),
            131008
        );
        assert_eq!(
            code(base(
                json!({"type": "location", "location": {"latitude": 1}})
            )),
            131008
        );
    }

    #[test]
    fn mark_as_read_needs_a_message_id() {
        let call = parse(
            &json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}),
        );
        assert_eq!(
            call.unwrap(),
            MessagesCall::MarkRead {
                message_id: "wamid.X".into()
            }
        );
        assert_eq!(
            code(json!({"messaging_product": "whatsapp", "status": "read"})),
            100
        );
    }
}
