//! What becomes of the visitor's text: hostile text is still shown, escaped
//! rather than dropped, with links whole; long text is cut with an ellipsis,
//! never inside a character.

use crisp_relay::targets::invariants::{self, unescape_discord, unescape_slack};
use serde_json::Value;

use super::*;
use crate::helpers::*;

/// Length as Discord and Slack may count it (UTF-16 units, never fewer than
/// code points).
fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

// ---------------------------------------------------------------------------
// Hostile text, escaped.

/// The hostile text is still shown, escaped rather than dropped.
#[test]
fn hostile_samples_are_shown_escaped() {
    let work = Workdir::new(&all_kinds_config());
    let bodies = |name: &str| {
        let d = render_json(&work, &fixture_path(name));
        let text = |kind: &str| {
            invariants::strings(&delivery(&d, kind, name)["body"])
                .into_iter()
                .map(|(_, s)| s.to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        (text("discord"), text("slack"))
    };
    let has = |hay: &str, needle: &str, what: &str| {
        assert!(hay.contains(needle), "{what}: {needle:?} not in:\n{hay}");
    };

    let (discord, slack) = bodies("message_send_text_everyone_mention.json");
    has(
        &discord,
        "@\u{200B}everyone @\u{200B}here please look",
        "discord",
    );
    has(
        &slack,
        "@\u{200B}everyone @\u{200B}here please look",
        "slack",
    );

    let (discord, slack) = bodies("message_send_text_slack_special_tokens.json");
    has(
        &slack,
        "&lt;!channel&gt; &lt;!here&gt; &lt;@U024BE7LH&gt;",
        "slack",
    );
    has(
        &slack,
        "&lt;https://evil.example.com|click to claim refund&gt;",
        "slack",
    );
    has(&discord, "\\<!channel> \\<!here> \\<@U024BE7LH>", "discord");

    let (discord, slack) = bodies("message_send_text_markdown.json");
    has(&discord, "\\*\\*Bug report\\*\\*", "discord");
    has(&discord, "\\[docs\\](https://example.com/docs)", "discord");
    has(&discord, "\\|\\|spoiler\\|\\|", "discord");
    has(&discord, "\\`\\`\\`js", "discord");
    has(&slack, "Open `Settings &gt; Billing`", "slack");

    let (discord, slack) = bodies("message_send_text_html.json");
    has(&discord, "\\<script>alert('xss')\\</script>", "discord");
    has(&slack, "&lt;script&gt;alert('xss')&lt;/script&gt;", "slack");
    has(&slack, "&amp; &amp;amp; &amp;lt;tag&amp;gt;", "slack");

    // Links stay whole: the `url` helper writes them unescaped.
    for name in [
        "message_send_file_image.json",
        "message_send_file_pdf_email.json",
        "message_send_audio_voice.json",
        "message_send_animation_gif.json",
    ] {
        let url = fixture_json(name)["data"]["content"]["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (discord, slack) = bodies(name);
        has(&discord, &url, &format!("{name} discord"));
        has(&slack, &url, &format!("{name} slack"));
    }
    let d = render_json(&work, &fixture_path("message_send_audio_voice.json"));
    let slack = serde_json::to_string(&delivery(&d, "slack", "audio")["body"]).unwrap();
    has(&slack, "0:17", "audio duration");

    let original = fixture_json("message_send_text_unicode_emoji.json");
    let content = original["data"]["content"].as_str().unwrap();
    let nickname = original["data"]["user"]["nickname"].as_str().unwrap();
    let (discord, slack) = bodies("message_send_text_unicode_emoji.json");
    has(&discord, content, "discord");
    has(&discord, nickname, "discord");
    has(&slack, content, "slack");
}

// ---------------------------------------------------------------------------
// Truncation.

/// Among `body`'s strings, those cut by the relay or a template (ending with
/// `…`) at least `min` units long.
fn cut_strings(body: &Value, min: usize) -> Vec<(String, String)> {
    invariants::strings(body)
        .into_iter()
        .filter(|(_, s)| s.ends_with('…') && units(s) >= min)
        .map(|(p, s)| (p, s.to_owned()))
        .collect()
}

fn assert_cut_prefix(original: &str, kept: &str, what: &str) {
    let kept = kept.strip_suffix('…').unwrap();
    assert!(!kept.is_empty(), "{what}: nothing kept");
    assert!(
        original.starts_with(kept),
        "{what}: the kept text is not a prefix of the original:\nkept: {:?}\norig: {:?}",
        &kept[kept.len().saturating_sub(80)..],
        &original[..original.len().min(kept.len() + 20)]
    );
}

#[test]
fn long_text_is_cut_with_an_ellipsis() {
    let work = Workdir::new(&all_kinds_config());
    let name = "message_send_text_long_5000.json";
    let original = fixture_json(name)["data"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(original.chars().count(), 5000);
    let deliveries = render_json(&work, &fixture_path(name));

    let discord = &delivery(&deliveries, "discord", name)["body"];
    let cut: Vec<_> = ["/content", "/embeds/0/description"]
        .iter()
        .filter_map(|p| discord.pointer(p).and_then(Value::as_str))
        .filter(|s| s.ends_with('…'))
        .collect();
    assert_eq!(cut.len(), 1, "one cut Discord text expected: {discord:#}");
    let text = cut[0];
    assert!(units(text) <= 4096 && units(text) > 1000, "{}", units(text));
    assert_cut_prefix(&original, &unescape_discord(text), "discord");

    let slack = &delivery(&deliveries, "slack", name)["body"];
    let cut = cut_strings(slack, 1000);
    assert!(!cut.is_empty(), "no cut Slack section: {slack:#}");
    for (path, text) in &cut {
        assert!(units(text) <= 3000, "{path}: {}", units(text));
        assert_cut_prefix(&original, &unescape_slack(text), &format!("slack {path}"));
    }

    // The stdout text is not cut: nothing is lost on the console.
    let console = delivery(&deliveries, "stdout", name)["body"]
        .as_str()
        .unwrap();
    assert!(console.contains(&original));
}

#[test]
fn cutting_never_splits_a_character() {
    let work = Workdir::new(&all_kinds_config());
    // The shipped unicode sample is short: it arrives whole.
    let name = "message_send_text_unicode_emoji.json";
    let mut event = fixture_json(name);
    let short = event["data"]["content"].as_str().unwrap().to_owned();
    let deliveries = render_json(&work, &fixture_path(name));
    let description = delivery(&deliveries, "discord", name)["body"]["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(unescape_discord(&description), short);

    // Made long, with characters of 1, 2 and (as ZWJ sequences) 5 UTF-16
    // units, at every alignment: every cut lands on a character boundary.
    for pad in ["", "a", "ab", "abc", "😀"] {
        let long = format!("{pad}{}", "👩\u{200D}💻é🇫🇷ж".repeat(700));
        assert!(units(&long) > 6000);
        event["data"]["content"] = Value::String(long.clone());
        work.write("long-unicode.json", &event.to_string());
        let deliveries = render_json(&work, &work.path().join("long-unicode.json"));

        let discord = &delivery(&deliveries, "discord", "long unicode")["body"];
        let description = discord["embeds"][0]["description"].as_str().unwrap();
        assert!(description.ends_with('…'), "pad {pad:?}: not cut");
        assert!(units(description) <= 4096, "pad {pad:?}");
        assert_cut_prefix(&long, &unescape_discord(description), "discord");

        let slack = &delivery(&deliveries, "slack", "long unicode")["body"];
        let cut = cut_strings(slack, 1000);
        assert!(!cut.is_empty(), "pad {pad:?}: no cut Slack text: {slack:#}");
        for (path, text) in &cut {
            assert!(units(text) <= 3000, "pad {pad:?} {path}");
            assert_cut_prefix(&long, &unescape_slack(text), &format!("slack {path}"));
        }
    }
}
