//! The Bot API over HTTP: `/bot<token>/<method>` (GET or POST, any parameter encoding, method
//! names case-insensitive) and file downloads at `/file/bot<token>/<file_path>`.
//!
//! Every handler checks its parameters, then the chat, then flood control, and only then
//! changes the world: a refused call has no effect.

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};

use super::TelegramSim;
use super::error::ApiError;
use super::files::{FileKind, FileStore};
use super::params::{Params, Upload};
use super::state::{BotState, Webhook};
use super::{SentMessage, webhook};
use crate::framework::server::{self, Gate, RequestLabel};
use crate::framework::{bump, unix_now};

/// Telegram accepts uploads up to 50 MB.
const MAX_BODY: usize = 50 * 1024 * 1024;

/// The Bot API and file download routes, recorded and (for API calls) fault-injected.
pub(super) fn router(sim: TelegramSim) -> Router {
    let gate = Gate {
        core: sim.core_arc(),
        label: label_request,
        server_error,
    };
    Router::new()
        .route("/{bot}/{method}", any(bot_api))
        .route("/file/{bot}/{*path}", get(download))
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(gate, server::gate))
        .with_state(sim)
}

/// Names a request for the log with the token's secret part hidden.
fn label_request(uri: &Uri) -> RequestLabel {
    let path = uri.path();
    let redact = |token: &str| match token.split_once(':') {
        Some((id, _)) => format!("{id}:***"),
        None => "***".to_owned(),
    };
    if let Some((token, file)) = path
        .strip_prefix("/file/bot")
        .and_then(|r| r.split_once('/'))
    {
        return RequestLabel {
            path: format!("/file/bot{}/{file}", redact(token)),
            api_method: None,
            faults_apply: false,
        };
    }
    match path.strip_prefix("/bot").and_then(|r| r.split_once('/')) {
        Some((token, method)) if !method.contains('/') => RequestLabel {
            path: format!("/bot{}/{method}", redact(token)),
            api_method: Some(method.to_ascii_lowercase()),
            faults_apply: true,
        },
        _ => RequestLabel {
            path: path.to_owned(),
            api_method: None,
            faults_apply: false,
        },
    }
}

/// An injected 5xx: Telegram's JSON envelope for 500, its front proxy's HTML page otherwise.
fn server_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        return ApiError::new(500, "Internal Server Error").into_response();
    }
    let reason = code.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    );
    (code, Html(page)).into_response()
}

async fn bot_api(
    State(sim): State<TelegramSim>,
    Path((bot, method)): Path<(String, String)>,
    params: Params,
) -> Response {
    let Some(token) = bot.strip_prefix("bot") else {
        return ApiError::not_found().into_response();
    };
    let method = method.to_ascii_lowercase();
    let result = if method == "getupdates" {
        get_updates(&sim, token, &params).await
    } else {
        call(&sim, token, &method, &params)
    };
    match result {
        Ok(value) => Json(json!({ "ok": true, "result": value })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Every method but getUpdates: one pass under the world lock.
fn call(sim: &TelegramSim, token: &str, method: &str, p: &Params) -> Result<Value, ApiError> {
    let mut world = sim.world();
    let (bot, files) = world.with_files(token)?;
    match method {
        "getme" => {
            let mut me = bot.user_json();
            me["can_join_groups"] = json!(true);
            me["can_read_all_group_messages"] = json!(false);
            me["supports_inline_queries"] = json!(false);
            me["can_connect_to_business"] = json!(false);
            me["has_main_web_app"] = json!(false);
            Ok(me)
        }
        "setwebhook" => set_webhook(sim, token, bot, p),
        "deletewebhook" => {
            remove_webhook(bot, p.bool("drop_pending_updates"));
            Ok(json!(true))
        }
        "getwebhookinfo" => Ok(json!(bot.webhook_info())),
        "sendmessage" => send_message(bot, p),
        "sendphoto" => send_media(bot, files, p, FileKind::Photo),
        "senddocument" => send_media(bot, files, p, FileKind::Document),
        "editmessagetext" => edit_message_text(bot, p),
        "answercallbackquery" => answer_callback_query(bot, p),
        "sendchataction" => bot.sendable_chat(p.chat_id()?).map(|_| json!(true)),
        "getfile" => p
            .str("file_id")
            .and_then(|id| files.file_object(&id))
            .ok_or_else(|| ApiError::bad_request("invalid file_id")),
        _ => Err(ApiError::not_found()),
    }
}

async fn get_updates(sim: &TelegramSim, token: &str, p: &Params) -> Result<Value, ApiError> {
    let offset = p.i64("offset")?;
    let limit = p.i64("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(p.i64("timeout")?.unwrap_or(0).max(0) as u64);
    let allowed = p.string_list("allowed_updates")?;
    let deadline = tokio::time::Instant::now() + timeout.min(sim.config().max_long_poll);
    let (generation, wake) = {
        let mut world = sim.world();
        let bot = world.api_bot(token)?;
        if bot.webhook.is_some() {
            return Err(webhook_conflict());
        }
        if let Some(offset) = offset {
            bot.confirm(offset);
        }
        if allowed.is_some() {
            bot.allowed_updates = allowed;
        }
        bot.poll_generation += 1;
        bot.wake.notify_waiters();
        (bot.poll_generation, bot.wake.clone())
    };
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut world = sim.world();
            let bot = world.api_bot(token)?;
            if bot.poll_generation != generation {
                return Err(ApiError::new(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                ));
            }
            if bot.webhook.is_some() {
                return Err(webhook_conflict());
            }
            let batch: Vec<Value> = bot
                .updates
                .iter()
                .take(limit)
                .map(|u| u.json.clone())
                .collect();
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                bump(&sim.core().counters().updates_delivered, batch.len() as u64);
                return Ok(Value::Array(batch));
            }
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn webhook_conflict() -> ApiError {
    ApiError::new(
        409,
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
    )
}

fn set_webhook(
    sim: &TelegramSim,
    token: &str,
    bot: &mut BotState,
    p: &Params,
) -> Result<Value, ApiError> {
    let url = p.str("url").unwrap_or_default();
    if url.is_empty() {
        remove_webhook(bot, p.bool("drop_pending_updates"));
        return Ok(json!(true));
    }
    let valid = reqwest::Url::parse(&url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !valid {
        return Err(ApiError::bad_request(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    let secret = p.str("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret {
        if secret.len() > 256 {
            return Err(ApiError::bad_request("secret token is too long"));
        }
        if !secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ApiError::bad_request(
                "secret token contains unallowed characters",
            ));
        }
    }
    let max_connections = p.i64("max_connections")?.unwrap_or(40).clamp(1, 100) as u32;
    if let Some(allowed) = p.string_list("allowed_updates")? {
        bot.allowed_updates = Some(allowed);
    }
    if p.bool("drop_pending_updates") {
        bot.updates.clear();
    }
    let last_error = bot.webhook.take().and_then(|old| {
        old.stop.cancel();
        old.last_error.filter(|_| old.url == url)
    });
    let stop = sim.shutdown_token().child_token();
    bot.webhook = Some(Webhook {
        url,
        secret,
        max_connections,
        last_error,
        stop: stop.clone(),
    });
    bot.wake.notify_waiters();
    webhook::spawn_delivery(sim.clone(), token.to_owned(), stop);
    Ok(json!(true))
}

fn remove_webhook(bot: &mut BotState, drop_pending: bool) {
    if let Some(old) = bot.webhook.take() {
        old.stop.cancel();
    }
    if drop_pending {
        bot.updates.clear();
    }
}

/// text (1-4096 characters), as sendMessage and editMessageText require.
fn message_text(p: &Params) -> Result<String, ApiError> {
    let text = p.str("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("message text is empty"));
    }
    if text.chars().count() > 4096 {
        return Err(ApiError::bad_request("message is too long"));
    }
    if let Some(mode) = p.str("parse_mode").filter(|m| !m.is_empty())
        && !matches!(
            mode.to_ascii_lowercase().as_str(),
            "html" | "markdown" | "markdownv2"
        )
    {
        return Err(ApiError::bad_request(&format!(
            "unsupported parse_mode \"{mode}\""
        )));
    }
    Ok(text)
}

fn reply_markup(p: &Params) -> Result<Option<Value>, ApiError> {
    match p.json("reply_markup") {
        Ok(None) => Ok(None),
        Ok(Some(markup)) if markup.is_object() => Ok(Some(markup)),
        _ => Err(ApiError::bad_request(
            "can't parse reply keyboard markup JSON object",
        )),
    }
}

/// The message to reply to (reply_parameters or the legacy reply_to_message_id), checked
/// against the chat.
fn reply_target(bot: &BotState, chat_id: i64, p: &Params) -> Result<Option<i64>, ApiError> {
    let parameters = p.json("reply_parameters")?.unwrap_or(Value::Null);
    let target = match parameters.get("message_id").and_then(Value::as_i64) {
        Some(id) => Some(id),
        None => p.i64("reply_to_message_id")?,
    };
    let Some(id) = target else { return Ok(None) };
    if bot.message(chat_id, id).is_some() {
        return Ok(Some(id));
    }
    let tolerate = p.bool("allow_sending_without_reply")
        || parameters.get("allow_sending_without_reply") == Some(&json!(true));
    if tolerate {
        Ok(None)
    } else {
        Err(ApiError::bad_request("message to be replied not found"))
    }
}

fn send_message(bot: &mut BotState, p: &Params) -> Result<Value, ApiError> {
    let chat_id = p.chat_id()?;
    let text = message_text(p)?;
    let markup = reply_markup(p)?;
    bot.sendable_chat(chat_id)?;
    let reply_to = reply_target(bot, chat_id, p)?;
    bot.take_send_token(chat_id)?;
    let mut content = Map::new();
    content.insert("text".into(), json!(text));
    insert_markup(&mut content, markup.as_ref());
    let message = post_as_bot(bot, chat_id, content, reply_to)?;
    record(bot, "sendmessage", chat_id, &message, markup, None, p);
    Ok(message)
}

/// Where a sendPhoto/sendDocument file comes from.
enum Media<'a> {
    Known(String),
    Url(String),
    Uploaded(&'a Upload),
}

fn send_media(
    bot: &mut BotState,
    files: &mut FileStore,
    p: &Params,
    kind: FileKind,
) -> Result<Value, ApiError> {
    let field = match kind {
        FileKind::Photo => "photo",
        FileKind::Document => "document",
    };
    let chat_id = p.chat_id()?;
    let caption = p.str("caption").filter(|c| !c.is_empty());
    if caption.as_ref().is_some_and(|c| c.chars().count() > 1024) {
        return Err(ApiError::bad_request("message caption is too long"));
    }
    let markup = reply_markup(p)?;
    let media = match (p.upload(field), p.str(field)) {
        (Some(upload), _) => Media::Uploaded(upload),
        (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            Media::Url(url)
        }
        (None, Some(id)) if files.get(&id).is_some() => Media::Known(id),
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "wrong file identifier/HTTP URL specified",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(&format!(
                "there is no {field} in the request"
            )));
        }
    };
    bot.sendable_chat(chat_id)?;
    let reply_to = reply_target(bot, chat_id, p)?;
    bot.take_send_token(chat_id)?;
    let (file_id, label) = match media {
        Media::Known(id) => (id.clone(), id),
        Media::Url(url) => {
            let name = url.rsplit('/').next().filter(|n| !n.is_empty());
            (files.add(Default::default(), name, None, kind), url)
        }
        Media::Uploaded(upload) => {
            let id = files.add(
                upload.bytes.clone(),
                Some(&upload.file_name),
                upload.content_type.as_deref(),
                kind,
            );
            (id, format!("upload:{}", upload.file_name))
        }
    };
    let object = match kind {
        FileKind::Photo => files.photo_sizes(&file_id),
        FileKind::Document => files.document(&file_id),
    };
    let mut content = Map::new();
    content.insert(field.into(), object.unwrap_or(Value::Null));
    if let Some(caption) = caption {
        content.insert("caption".into(), json!(caption));
    }
    insert_markup(&mut content, markup.as_ref());
    let message = post_as_bot(bot, chat_id, content, reply_to)?;
    record(
        bot,
        &format!("send{field}"),
        chat_id,
        &message,
        markup,
        Some(label),
        p,
    );
    Ok(message)
}

fn edit_message_text(bot: &mut BotState, p: &Params) -> Result<Value, ApiError> {
    let not_found = || ApiError::bad_request("message to edit not found");
    if p.is_present("inline_message_id") {
        return Err(not_found());
    }
    let chat_id = p.chat_id()?;
    let message_id = p
        .i64("message_id")?
        .ok_or_else(|| ApiError::bad_request("message identifier is not specified"))?;
    let text = message_text(p)?;
    let markup = reply_markup(p)?;
    bot.sendable_chat(chat_id)?;
    let stored = bot.message(chat_id, message_id).ok_or_else(not_found)?;
    if !stored.from_bot {
        return Err(ApiError::bad_request("message can't be edited"));
    }
    let inline = markup
        .as_ref()
        .filter(|m| m.get("inline_keyboard").is_some());
    if stored.json["text"] == json!(text) && stored.json.get("reply_markup") == inline {
        return Err(ApiError::bad_request(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        ));
    }
    let mut message = stored.json.clone();
    bot.take_send_token(chat_id)?;
    if let Some(obj) = message.as_object_mut() {
        obj.insert("text".into(), json!(text));
        obj.insert("edit_date".into(), json!(unix_now()));
        obj.remove("reply_markup");
        insert_markup(obj, markup.as_ref());
    }
    bot.replace_message(chat_id, message_id, message.clone());
    record(bot, "editmessagetext", chat_id, &message, markup, None, p);
    Ok(message)
}

fn answer_callback_query(bot: &mut BotState, p: &Params) -> Result<Value, ApiError> {
    let id = p.str("callback_query_id").unwrap_or_default();
    let (chat_id, message_id) = bot.answer_callback(&id).ok_or_else(|| {
        ApiError::bad_request(
            "query is too old and response timeout expired or query ID is invalid",
        )
    })?;
    bot.sent.push(SentMessage {
        method: "answercallbackquery".into(),
        chat_id,
        message_id,
        text: p.str("text"),
        caption: None,
        reply_to_message_id: None,
        reply_markup: None,
        media: None,
        params: p.as_json(),
        at: Instant::now(),
    });
    Ok(json!(true))
}

/// Telegram echoes only inline keyboards in the Message it returns.
fn insert_markup(content: &mut Map<String, Value>, markup: Option<&Value>) {
    if let Some(markup) = markup.filter(|m| m.get("inline_keyboard").is_some()) {
        content.insert("reply_markup".into(), markup.clone());
    }
}

fn post_as_bot(
    bot: &mut BotState,
    chat_id: i64,
    content: Map<String, Value>,
    reply_to: Option<i64>,
) -> Result<Value, ApiError> {
    let from = bot.user_json();
    bot.post_message(chat_id, Some(from), content, reply_to)
        .map_err(|e| ApiError::bad_request(&e.to_string()))
}

fn record(
    bot: &mut BotState,
    method: &str,
    chat_id: i64,
    message: &Value,
    markup: Option<Value>,
    media: Option<String>,
    p: &Params,
) {
    let text = |key: &str| message.get(key).and_then(Value::as_str).map(str::to_owned);
    bot.sent.push(SentMessage {
        method: method.to_owned(),
        chat_id,
        message_id: message["message_id"].as_i64().unwrap_or_default(),
        text: text("text"),
        caption: text("caption"),
        reply_to_message_id: message["reply_to_message"]["message_id"].as_i64(),
        reply_markup: markup,
        media,
        params: p.as_json(),
        at: Instant::now(),
    });
}

/// `GET /file/bot<token>/<file_path>`: the stored bytes.
async fn download(
    State(sim): State<TelegramSim>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let world = sim.world();
    let token = bot.strip_prefix("bot").unwrap_or_default();
    if !world.token_is_valid(token) {
        return ApiError::unauthorized().into_response();
    }
    match world.files.by_path(&path) {
        Some(file) => {
            let mime = file
                .mime
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into());
            ([(CONTENT_TYPE, mime)], file.bytes.clone()).into_response()
        }
        None => ApiError::not_found().into_response(),
    }
}
