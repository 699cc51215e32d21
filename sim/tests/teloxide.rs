//! teloxide-core, the Telegram client the gateway uses, runs unchanged against the simulator:
//! its strict types parse every update and answer the simulator produces.

use std::time::Duration;

use switchboard_sim::{TelegramConfig, TelegramSim, UserMessage};
use teloxide_core::net::Download;
use teloxide_core::prelude::*;
use teloxide_core::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, MaybeInaccessibleMessage,
    MessageId, ReplyParameters, UpdateKind,
};
use teloxide_core::{ApiError, RequestError};

const TOKEN: &str = "5550001:teloxide-secret";
const USER: i64 = 31337;

async fn start() -> (TelegramSim, Bot) {
    let sim = TelegramSim::start(TelegramConfig::default()).await.unwrap();
    sim.add_bot(TOKEN, "tx_bot");
    let bot = Bot::new(TOKEN).set_api_url(sim.base_url().parse().unwrap());
    (sim, bot)
}

#[tokio::test]
async fn teloxide_parses_every_kind_of_update() {
    let (sim, bot) = start().await;
    let me = bot.get_me().await.unwrap();
    assert_eq!(me.username(), "tx_bot");

    sim.user_message(TOKEN, UserMessage::text(USER, USER, "/start now"));
    let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Go", "go")]]);
    let menu = bot
        .send_message(ChatId(USER), "menu")
        .reply_markup(keyboard)
        .reply_parameters(ReplyParameters::new(MessageId(1)))
        .await
        .unwrap();
    assert_eq!(
        menu.reply_to_message().and_then(|m| m.text()),
        Some("/start now")
    );

    sim.user_presses_button(TOKEN, USER, USER, menu.id.0 as i64, "go");
    sim.user_edits(TOKEN, USER, 1, "/start later");
    sim.bot_added_to_group(TOKEN, -1_001_000_000_001, "Team", USER);
    sim.channel_post(TOKEN, -1_002_000_000_002, "News", "breaking");
    let photo = sim.add_file(TOKEN, vec![1, 2, 3], "p.jpg", "image/jpeg");
    sim.user_message(
        TOKEN,
        UserMessage {
            photo_file_id: Some(photo),
            caption: Some("look".into()),
            location: None,
            text: None,
            ..UserMessage::text(USER, USER, "")
        },
    );
    sim.block_bot(TOKEN, USER);

    let updates = bot.get_updates().timeout(1).await.unwrap();
    let kinds: Vec<&str> = updates
        .iter()
        .map(|u| match &u.kind {
            UpdateKind::Message(_) => "message",
            UpdateKind::EditedMessage(_) => "edited_message",
            UpdateKind::ChannelPost(_) => "channel_post",
            UpdateKind::CallbackQuery(_) => "callback_query",
            UpdateKind::MyChatMember(_) => "my_chat_member",
            other => panic!("teloxide could not parse an update: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "callback_query",
            "edited_message",
            "my_chat_member",
            "channel_post",
            "message",
            "my_chat_member"
        ]
    );
    let UpdateKind::CallbackQuery(query) = &updates[1].kind else {
        unreachable!()
    };
    assert!(matches!(
        query.message,
        Some(MaybeInaccessibleMessage::Regular(_))
    ));
    bot.answer_callback_query(query.id.clone())
        .text("ok")
        .await
        .unwrap();
    let UpdateKind::Message(with_photo) = &updates[5].kind else {
        unreachable!()
    };
    assert_eq!(with_photo.photo().map(<[_]>::len), Some(3));
}

#[tokio::test]
async fn teloxide_uploads_and_downloads_a_photo() {
    let (sim, bot) = start().await;
    sim.user_message(TOKEN, UserMessage::text(USER, USER, "hi"));
    let bytes = vec![7u8; 2048];
    let sent = bot
        .send_photo(
            ChatId(USER),
            InputFile::memory(bytes.clone()).file_name("big.png"),
        )
        .caption("pic")
        .await
        .unwrap();
    let largest = sent.photo().unwrap().last().unwrap();
    let file = bot.get_file(largest.file.id.clone()).await.unwrap();
    let mut downloaded = Vec::new();
    bot.download_file(&file.path, &mut downloaded)
        .await
        .unwrap();
    assert_eq!(downloaded, bytes);

    let edited = bot
        .edit_message_text(ChatId(USER), MessageId(1), "x")
        .await
        .unwrap_err();
    assert!(matches!(edited, RequestError::Api(_)), "{edited:?}");
}

#[tokio::test]
async fn teloxide_sees_flood_control_and_blocks_as_typed_errors() {
    let (sim, bot) = start().await;
    sim.user_message(TOKEN, UserMessage::text(USER, USER, "hi"));
    let mut refusal = None;
    for _ in 0..5 {
        if let Err(error) = bot.send_message(ChatId(USER), "spam").await {
            refusal = Some(error);
            break;
        }
    }
    match refusal {
        Some(RequestError::RetryAfter(wait)) => assert!(wait.duration() >= Duration::from_secs(1)),
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    let error = bot.send_message(ChatId(777), "nobody").await.unwrap_err();
    assert!(
        matches!(error, RequestError::Api(ApiError::ChatNotFound)),
        "{error:?}"
    );
    sim.block_bot(TOKEN, USER);
    let error = bot.send_message(ChatId(USER), "hello?").await.unwrap_err();
    assert!(
        matches!(error, RequestError::Api(ApiError::BotBlocked)),
        "{error:?}"
    );
}
