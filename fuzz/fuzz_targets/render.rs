//! An event → every template × every target kind, through
//! `Relay::prepare_for` (render, then the target's body building and fitting:
//! what delivery sends). The invariants are in `crisp_relay_fuzz` (src/lib.rs):
//! valid JSON, Discord's and Slack's limits as the code counts them, nothing
//! that can ping on Discord, no `<…>` control sequence and no live
//! `@channel` on Slack, exact JSON escaping for webhooks, raw text on stdout.
//!
//! Input: bytes that are a Crisp envelope are used as they are (the seed
//! corpus is tests/fixtures/crisp-events, so mutations of real events); other
//! bytes build a structured event with `arbitrary`, biased towards hostile
//! text (mention and markup tokens, entities, long repeats that reach the
//! truncation limits).

#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use crisp_relay::event::Event;
use crisp_relay_fuzz::{RECEIVED_AT, RenderRelay};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static RELAY: LazyLock<RenderRelay> = LazyLock::new(RenderRelay::new);

/// Text that the escaping must handle.
const TOKENS: &[&str] = &[
    "@everyone",
    "@here",
    "@channel",
    "@",
    "<!channel>",
    "<!here>",
    "<@U024BE7LH>",
    "<@123>",
    "<@&456>",
    "<#789>",
    "<t:1700000000:R>",
    "</cmd:1>",
    "<https://evil.example|click>",
    "[x](https://evil.example)",
    "](",
    "[",
    "]",
    "(",
    ")",
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;",
    "&gt;",
    "\\",
    "*",
    "_",
    "~",
    "`",
    "```",
    "|",
    "||",
    "#",
    "# ",
    "-",
    "> ",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\u{200B}",
    "\u{FEFF}",
    "é",
    "😀",
    "👩\u{200D}💻",
    "e\u{0301}",
    "…",
    "\"",
    "'",
    "{{",
    "}}",
    "\u{0000}",
    "\u{001F}",
    "\u{2028}",
    "\u{10FFFF}",
    "https://e.example/",
    "everyone",
    "here",
    "channel",
    "${X}",
    "%",
];

/// Known values for enumerated fields.
const EVENTS: &[&str] = &[
    "message:send",
    "message:received",
    "message:updated",
    "message:removed",
    "session:set_email",
    "session:set_phone",
    "session:set_nickname",
    "session:set_state",
    "people:profile:created",
    "session:removed",
];
const TYPES: &[&str] = &[
    "text",
    "note",
    "file",
    "animation",
    "audio",
    "picker",
    "field",
    "carousel",
    "event",
];
const FROMS: &[&str] = &["user", "operator"];
const ORIGINS: &[&str] = &[
    "chat",
    "email",
    "urn:crisp.im:whatsapp:0",
    "urn:crisp.im:slack:0",
    "urn:crisp.im:contact-form:0",
    "urn:crisp.im:@everyone:0",
    "urn:x",
];
const STATES: &[&str] = &["resolved", "unresolved", "pending"];
const MIMES: &[&str] = &["image/png", "image/gif", "application/pdf", "audio/webm"];
const URLS: &[&str] = &[
    "https://storage.crisp.chat/users/upload/a/b/file.png",
    "https://e.example/@everyone/@here/@channel",
    "https://user@here.example/x?a=1&b=2#f",
    "http://e.example/a\"b<c>|d)e(f`g*h_i[j]{k}",
    "javascript:alert(1)",
    "  https://e.example/ws  ",
    "https://e.example/%3C@123%3E",
    "ftp://e.example/",
];

const MAX_TEXT: usize = 48_000;

#[derive(Arbitrary, Debug)]
enum Piece {
    Token(u8),
    Raw(String),
    Char(char),
    /// A token repeated up to 255 times.
    Repeat(u8, u8),
    /// A token repeated until the text is about one of Discord's or Slack's
    /// limits long (± 8 UTF-16 units), to reach every truncation.
    ToLimit(u8, u8, i8),
}

/// Discord's and Slack's length limits (UTF-16 units), and the templates'.
const LIMITS: &[usize] = &[
    75, 80, 150, 256, 300, 1000, 1024, 2000, 2048, 3000, 4096, 6000, 40_000,
];

#[derive(Arbitrary, Debug)]
struct Text(Vec<Piece>);

impl Text {
    fn build(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Piece::Token(i) => s.push_str(TOKENS[*i as usize % TOKENS.len()]),
                Piece::Raw(r) => s.push_str(r),
                Piece::Char(c) => s.push(*c),
                Piece::Repeat(i, n) => {
                    s.push_str(&TOKENS[*i as usize % TOKENS.len()].repeat(*n as usize));
                }
                Piece::ToLimit(i, l, delta) => {
                    let t = TOKENS[*i as usize % TOKENS.len()];
                    let units = t.encode_utf16().count().max(1);
                    let want = LIMITS[*l as usize % LIMITS.len()] as isize + (*delta % 9) as isize;
                    let have = s.encode_utf16().count() as isize;
                    let n = (want - have).max(0) as usize / units + 1;
                    s.push_str(&t.repeat(n));
                }
            }
            if s.len() > MAX_TEXT {
                let mut end = MAX_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                break;
            }
        }
        s
    }
}

/// One of a list of known values, or any text.
#[derive(Arbitrary, Debug)]
enum Pick {
    Known(u8),
    Other(Text),
}

impl Pick {
    fn build(&self, known: &[&str]) -> Value {
        match self {
            Pick::Known(i) => Value::from(known[*i as usize % known.len()]),
            Pick::Other(t) => Value::from(t.build()),
        }
    }
}

/// A value where a string is expected: mostly a string, sometimes not.
#[derive(Arbitrary, Debug)]
enum Field {
    Text(Text),
    Known(Pick),
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Text>),
    Object(Vec<(String, Text)>),
}

impl Field {
    fn build(&self, known: &[&str]) -> Value {
        match self {
            Field::Text(t) => Value::from(t.build()),
            Field::Known(p) => p.build(known),
            Field::Null => Value::Null,
            Field::Int(i) => Value::from(*i),
            Field::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Field::Bool(b) => Value::from(*b),
            Field::List(items) => items.iter().map(|t| Value::from(t.build())).collect(),
            Field::Object(kv) => Value::Object(
                kv.iter()
                    .map(|(k, t)| (k.clone(), Value::from(t.build())))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Choice {
    label: Option<Field>,
    value: Option<Field>,
    selected: Option<bool>,
}

#[derive(Arbitrary, Debug)]
struct CarouselTarget {
    title: Option<Field>,
    description: Option<Field>,
}

#[derive(Arbitrary, Debug)]
struct ContentObject {
    name: Option<Field>,
    url: Option<Field>,
    mime: Option<Field>,
    text: Option<Field>,
    value: Option<Field>,
    duration: Option<Field>,
    namespace: Option<Field>,
    choices: Option<Vec<Choice>>,
    targets: Option<Vec<CarouselTarget>>,
}

#[derive(Arbitrary, Debug)]
enum Content {
    Field(Field),
    Object(Box<ContentObject>),
}

#[derive(Arbitrary, Debug)]
struct User {
    nickname: Option<Field>,
    email: Option<Field>,
    avatar: Option<Field>,
    user_id: Option<Field>,
}

#[derive(Arbitrary, Debug)]
enum UserField {
    Object(User),
    Other(Field),
}

#[derive(Arbitrary, Debug)]
struct Input {
    event: Pick,
    website_id: Option<Pick>,
    timestamp: Option<i64>,
    session_id: Option<Field>,
    ty: Option<Field>,
    from: Option<Field>,
    origin: Option<Field>,
    content: Option<Content>,
    user: Option<UserField>,
    nickname: Option<Field>,
    email: Option<Field>,
    phone: Option<Field>,
    state: Option<Field>,
    people_id: Option<Field>,
    person_nickname: Option<Field>,
}

const WEBSITES: &[&str] = &["3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46", "", "w 1/../x?y#z"];

fn put(map: &mut Map<String, Value>, key: &str, field: &Option<Field>, known: &[&str]) {
    if let Some(f) = field {
        map.insert(key.into(), f.build(known));
    }
}

impl Input {
    fn build(&self) -> Value {
        let mut data = Map::new();
        put(&mut data, "session_id", &self.session_id, &["session_1"]);
        put(&mut data, "type", &self.ty, TYPES);
        put(&mut data, "from", &self.from, FROMS);
        put(&mut data, "origin", &self.origin, ORIGINS);
        put(&mut data, "nickname", &self.nickname, &["Ann"]);
        put(&mut data, "email", &self.email, &["a@here.example"]);
        put(&mut data, "phone", &self.phone, &["+33 6 00 00 00 00"]);
        put(&mut data, "state", &self.state, STATES);
        put(&mut data, "people_id", &self.people_id, &["p-1"]);
        if let Some(n) = &self.person_nickname {
            data.insert("person".into(), json!({"nickname": n.build(&["Bo"])}));
        }
        match &self.content {
            None => {}
            Some(Content::Field(f)) => {
                data.insert("content".into(), f.build(&["hello"]));
            }
            Some(Content::Object(c)) => {
                let mut m = Map::new();
                put(&mut m, "name", &c.name, &["file.png"]);
                put(&mut m, "url", &c.url, URLS);
                put(&mut m, "type", &c.mime, MIMES);
                put(&mut m, "text", &c.text, &["Pick one"]);
                put(&mut m, "value", &c.value, &["42"]);
                put(&mut m, "duration", &c.duration, &["17"]);
                put(&mut m, "namespace", &c.namespace, &["state:resolved"]);
                if let Some(choices) = &c.choices {
                    let list = choices.iter().map(|ch| {
                        let mut o = Map::new();
                        put(&mut o, "label", &ch.label, &["Yes"]);
                        put(&mut o, "value", &ch.value, &["yes"]);
                        if let Some(s) = ch.selected {
                            o.insert("selected".into(), Value::from(s));
                        }
                        Value::Object(o)
                    });
                    m.insert("choices".into(), list.collect());
                }
                if let Some(targets) = &c.targets {
                    let list = targets.iter().map(|t| {
                        let mut o = Map::new();
                        put(&mut o, "title", &t.title, &["Card"]);
                        put(&mut o, "description", &t.description, &["About"]);
                        Value::Object(o)
                    });
                    m.insert("targets".into(), list.collect());
                }
                data.insert("content".into(), Value::Object(m));
            }
        }
        match &self.user {
            None => {}
            Some(UserField::Other(f)) => {
                data.insert("user".into(), f.build(&["visitor"]));
            }
            Some(UserField::Object(u)) => {
                let mut m = Map::new();
                put(&mut m, "nickname", &u.nickname, &["visitor493603"]);
                put(&mut m, "email", &u.email, &["a@b.example"]);
                put(&mut m, "avatar", &u.avatar, URLS);
                put(&mut m, "user_id", &u.user_id, &["u-1"]);
                data.insert("user".into(), Value::Object(m));
            }
        }
        let mut envelope = Map::new();
        envelope.insert(
            "website_id".into(),
            self.website_id
                .as_ref()
                .map_or(Value::from(WEBSITES[0]), |w| w.build(WEBSITES)),
        );
        envelope.insert("event".into(), self.event.build(EVENTS));
        envelope.insert("data".into(), Value::Object(data));
        if let Some(ts) = self.timestamp {
            envelope.insert("timestamp".into(), Value::from(ts));
        }
        Value::Object(envelope)
    }
}

fuzz_target!(|data: &[u8]| {
    let relay = &*RELAY;
    let event = match Event::parse(data, RECEIVED_AT) {
        Ok(event) => event,
        Err(_) => {
            let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
                return;
            };
            // As delivery sees it: the stored JSON text, checked again.
            let text = input.build().to_string();
            Event::parse(text.as_bytes(), RECEIVED_AT).expect("a built envelope is valid")
        }
    };
    relay.render_and_check(event.value());
});
