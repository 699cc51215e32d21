//! The JSON objects Discord sends: snowflakes, timestamps, users, members, messages, guilds,
//! interactions and the READY payload, shaped as Discord documents them (and as
//! twilight-model deserializes them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Discord's epoch (2015-01-01T00:00:00Z) in unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

static INCREMENT: AtomicU64 = AtomicU64::new(0);

/// A fresh snowflake: milliseconds since Discord's epoch in the high bits, then a process-wide
/// increment, so ids are unique and grow with time.
pub(crate) fn snowflake() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let increment = INCREMENT.fetch_add(1, Ordering::Relaxed) & 0x3f_ffff;
    (((now_ms.saturating_sub(DISCORD_EPOCH_MS)) << 22) | increment).to_string()
}

/// Now as Discord's ISO 8601 timestamp, e.g. `2026-11-22T01:46:27.123000+00:00`.
pub(crate) fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// A random token-like string (session ids, interaction tokens).
pub(crate) fn opaque(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

/// A user object (`bot` only for bots, as Discord omits it for humans).
pub(crate) fn user(id: &str, username: &str, bot: bool) -> Value {
    let mut user = json!({
        "id": id,
        "username": username,
        "discriminator": "0",
        "global_name": username,
        "avatar": null,
        "public_flags": 0,
    });
    if bot {
        user["bot"] = json!(true);
    }
    user
}

/// The bot's own user, as `GET /users/@me` and READY give it.
pub(crate) fn current_user(id: &str, username: &str) -> Value {
    let mut user = user(id, username, true);
    user["mfa_enabled"] = json!(false);
    user["verified"] = json!(true);
    user["flags"] = json!(0);
    user["locale"] = json!("en-US");
    user
}

/// A guild member without its user (as MESSAGE_CREATE's `member`).
pub(crate) fn partial_member() -> Value {
    json!({
        "roles": [],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
        "nick": null,
        "avatar": null,
    })
}

/// What a message says, before Discord wraps it in a Message object.
pub(crate) struct MessageParts<'a> {
    pub id: &'a str,
    pub channel_id: &'a str,
    pub guild_id: Option<&'a str>,
    pub author: Value,
    pub content: &'a str,
    pub embeds: Value,
    pub components: Value,
    /// The referenced message, for replies (type 19).
    pub referenced: Option<Value>,
    /// Author is a human in a guild: the message carries `member`.
    pub with_member: bool,
    pub mentions: Value,
}

/// A Message object.
pub(crate) fn message(parts: MessageParts<'_>) -> Value {
    let mut message = json!({
        "id": parts.id,
        "channel_id": parts.channel_id,
        "author": parts.author,
        "content": parts.content,
        "timestamp": timestamp(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": parts.mentions,
        "mention_roles": [],
        "attachments": [],
        "embeds": parts.embeds,
        "components": parts.components,
        "pinned": false,
        "type": if parts.referenced.is_some() { 19 } else { 0 },
        "flags": 0,
    });
    if let Some(guild_id) = parts.guild_id {
        message["guild_id"] = json!(guild_id);
        if parts.with_member {
            message["member"] = partial_member();
        }
    }
    if let Some(referenced) = parts.referenced {
        let mut reference = json!({
            "type": 0,
            "message_id": referenced["id"],
            "channel_id": parts.channel_id,
        });
        if let Some(guild_id) = parts.guild_id {
            reference["guild_id"] = json!(guild_id);
        }
        message["message_reference"] = reference;
        message["referenced_message"] = referenced;
    }
    message
}

/// A guild as GUILD_CREATE sends it to a bot: the guild's settings, its text channels, and
/// the bot as its only listed member.
pub(crate) fn guild_create(guild_id: &str, channels: &[(String, String)], bot: &Value) -> Value {
    let channels: Vec<Value> = channels
        .iter()
        .enumerate()
        .map(|(position, (id, name))| {
            json!({
                "id": id, "type": 0, "guild_id": guild_id, "name": name,
                "position": position, "permission_overwrites": [], "nsfw": false,
                "topic": null, "last_message_id": null, "rate_limit_per_user": 0,
                "parent_id": null,
            })
        })
        .collect();
    let mut member = partial_member();
    member["user"] = bot.clone();
    let mut guild = json!({
        "id": guild_id,
        "name": format!("Guild {guild_id}"),
        "icon": null, "splash": null, "discovery_splash": null, "banner": null,
        "description": null,
        "owner_id": "100000000000000001",
        "afk_channel_id": null, "afk_timeout": 300,
        "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0,
        "premium_subscription_count": 0, "premium_progress_bar_enabled": false,
        "system_channel_id": null, "system_channel_flags": 0, "rules_channel_id": null,
    });
    let more = json!({
        "public_updates_channel_id": null, "safety_alerts_channel_id": null,
        "vanity_url_code": null, "preferred_locale": "en-US",
        "max_video_channel_users": 25, "max_stage_video_channel_users": 50,
        "application_id": null, "widget_enabled": false,
        "roles": [{
            "id": guild_id, "name": "@everyone", "color": 0, "hoist": false, "icon": null,
            "colors": { "primary_color": 0, "secondary_color": null, "tertiary_color": null },
            "unicode_emoji": null, "position": 0, "permissions": "1071698660929",
            "managed": false, "mentionable": false, "flags": 0,
        }],
        "emojis": [], "stickers": [], "features": [],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "large": false, "unavailable": false, "member_count": 2,
    });
    let lists = json!({
        "voice_states": [], "members": [member], "channels": channels, "threads": [],
        "presences": [], "stage_instances": [], "guild_scheduled_events": [],
        "soundboard_sounds": [],
    });
    for part in [more, lists] {
        if let (Some(target), Value::Object(source)) = (guild.as_object_mut(), part) {
            target.extend(source);
        }
    }
    guild
}

/// What an interaction says, before Discord wraps it in an Interaction object.
pub(crate) struct InteractionParts<'a> {
    pub id: &'a str,
    pub token: &'a str,
    pub application_id: &'a str,
    pub channel_id: &'a str,
    pub guild_id: Option<&'a str>,
    pub user: Value,
    /// 2: application command, 3: message component.
    pub kind: u8,
    pub data: Value,
    /// The message a component belongs to.
    pub message: Option<Value>,
}

/// A button press: `data` for a button (component type 2) with its `custom_id`.
pub(crate) fn button_data(custom_id: &str) -> Value {
    json!({ "custom_id": custom_id, "component_type": 2 })
}

/// A chat-input (slash) command without options.
pub(crate) fn command_data(command_id: &str, name: &str) -> Value {
    json!({ "id": command_id, "name": name, "type": 1, "options": [] })
}

/// An Interaction object (gateway INTERACTION_CREATE payload or HTTP interaction body).
pub(crate) fn interaction(parts: InteractionParts<'_>) -> Value {
    let channel_type = if parts.guild_id.is_some() { 0 } else { 1 };
    let mut interaction = json!({
        "id": parts.id,
        "application_id": parts.application_id,
        "type": parts.kind,
        "data": parts.data,
        "channel": { "id": parts.channel_id, "type": channel_type },
        "channel_id": parts.channel_id,
        "token": parts.token,
        "version": 1,
        "app_permissions": "1071698660929",
        "attachment_size_limit": 10_485_760,
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": { "0": parts.guild_id.unwrap_or(parts.application_id) },
        "context": if parts.guild_id.is_some() { 0 } else { 1 },
    });
    if let Some(message) = parts.message {
        interaction["message"] = message;
    }
    match parts.guild_id {
        Some(guild_id) => {
            let mut member = partial_member();
            member["user"] = parts.user;
            member["permissions"] = json!("1071698660929");
            interaction["guild_id"] = json!(guild_id);
            interaction["guild_locale"] = json!("en-US");
            interaction["member"] = member;
        }
        None => interaction["user"] = parts.user,
    }
    interaction
}

/// The READY payload.
pub(crate) fn ready(
    user: Value,
    application_id: &str,
    guild_ids: &[String],
    session_id: &str,
    resume_gateway_url: &str,
) -> Value {
    let guilds: Vec<Value> = guild_ids
        .iter()
        .map(|id| json!({ "id": id, "unavailable": true }))
        .collect();
    json!({
        "v": 10,
        "user": user,
        "guilds": guilds,
        "session_id": session_id,
        "resume_gateway_url": resume_gateway_url,
        "shard": [0, 1],
        "application": { "id": application_id, "flags": 0 },
        "private_channels": [],
        "relationships": [],
        "user_settings": {},
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
        "_trace": ["[\"switchboard-sim\"]"],
    })
}
