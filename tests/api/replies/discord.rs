//! Replies typed in a conversation's Discord thread, read through the bot's
//! Gateway (the fake Gateway) and, after the relay was down, through REST
//! (the fake Discord's Get Channel Messages): each reaches Crisp once.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::fakes::{FakeDiscord, FakeGateway};

const FORUM: &str = "1200000000000000021";

/// A message id Discord would give a message posted now (+ `n`).
fn snowflake_now(n: u64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (((ms - 1_420_070_400_000) << 22) + n).to_string()
}

fn discord_config(discord: &FakeDiscord, crisp: &FakeCrisp) -> Workdir {
    let work = chat_config(&format!(
        "{{kind: discord, token: \"{}\", channel: \"{FORUM}\", api_url: \"{}\", threads: per_conversation, replies: true}}",
        discord.bot_token(),
        discord.api_base()
    ));
    let yaml = std::fs::read_to_string(work.config_path()).unwrap();
    work.write(
        "relay.yaml",
        &format!(
            "{yaml}crisp:\n  identifier: \"{CRISP_ID}\"\n  key: \"{CRISP_KEY}\"\n  api_url: \"{}\"\n",
            crisp.api_base()
        ),
    );
    work
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_in_a_discord_thread_reach_crisp_once_also_those_typed_while_the_relay_was_down() {
    let discord = FakeDiscord::start("bot-token", 5, Duration::from_secs(2)).await;
    discord.add_forum_channel(FORUM);
    let gateway = FakeGateway::start("bot-token").await;
    discord.set_gateway_url(&format!("ws://{}", gateway.ws_addr));
    let crisp = FakeCrisp::start(CRISP_ID, CRISP_KEY).await;
    let mut app = TestApp::spawn_in(discord_config(&discord, &crisp), &[]).await;

    assert_eq!(app.post_event(conv_message("ann", 1)).await.status(), 200);
    eventually("ann's thread", || discord.threads().len() == 1).await;
    let thread = discord.threads()[0].id.clone();
    eventually("a Gateway session", || gateway.session_id().is_some()).await;

    // A person's reply; the bot's own post and a message elsewhere are not.
    let first = snowflake_now(1);
    gateway.push_message(&first, &thread, "Hello from Discord");
    let mut bot = FakeGateway::message(&snowflake_now(2), &thread, "from a bot");
    bot["author"]["bot"] = json!(true);
    gateway.dispatch("MESSAGE_CREATE", bot);
    gateway.push_message(&snowflake_now(3), "1200000000000000999", "elsewhere");
    gateway.push_message(&snowflake_now(4), &thread, "Second line");
    eventually("two replies in Crisp", || crisp.messages().len() == 2).await;
    let got: Vec<(String, String)> = crisp
        .messages()
        .iter()
        .map(|m| (m.content(), m.nickname().to_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Hello from Discord".to_string(), "Ana B.".to_string()),
            ("Second line".to_string(), "Ana B.".to_string()),
        ]
    );
    assert_eq!(crisp.messages()[0].session_id, "session_ann");
    // The agent sees a ✅ on each.
    eventually("two check marks", || discord.reactions().len() == 2).await;
    assert!(
        discord
            .reactions()
            .contains(&(thread.clone(), first.clone(), "%E2%9C%85".to_string())),
        "{:?}",
        discord.reactions()
    );
    assert!(
        crisp.messages()[0].body["user"]["avatar"]
            .as_str()
            .is_some_and(|a| a.starts_with("https://cdn.discordapp.com/avatars/")),
        "{}",
        crisp.messages()[0].body
    );

    // The relay goes down; meanwhile an agent writes in the thread.
    assert!(app.terminate().success());
    discord.post_as_person(&thread, &first, "Hello from Discord");
    discord.post_as_person(&thread, &snowflake_now(10), "Written while you were away");
    let app = TestApp::spawn_in(app.into_work(), &[]).await;
    eventually("the missed reply in Crisp", || crisp.messages().len() >= 3).await;
    // A later live reply marks the end of the catch-up.
    eventually("a new Gateway session", || gateway.sent_op(2).len() >= 2).await;
    gateway.push_message(&snowflake_now(20), &thread, "Back live");
    eventually("the live reply", || {
        crisp.messages().iter().any(|m| m.content() == "Back live")
    })
    .await;
    let contents: Vec<String> = crisp.messages().iter().map(|m| m.content()).collect();
    assert_eq!(
        contents,
        vec![
            "Hello from Discord",
            "Second line",
            "Written while you were away",
            "Back live"
        ]
    );
    assert!(!app.logs().contains("bot-token"));
    let metrics = app.admin_get("/metrics").await.text().await.unwrap();
    // Since the restart: the missed one (the first again is a duplicate), the live one.
    assert_eq!(
        metric(
            &metrics,
            "crisp_relay_replies_received_total{source=\"discord\",outcome=\"accepted\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "crisp_relay_replies_received_total{source=\"discord\",outcome=\"duplicate\"}"
        ),
        Some(1.0)
    );
}
