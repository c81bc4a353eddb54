//! The attempt history and the console's reads, on each engine (see
//! `store_engines`): attempts recorded with the results that change their
//! rows, the cap of 20 per delivery, attempts deleted with their
//! deliveries, each filter of `recent_deliveries`, its pagination, the
//! conversations' listing (the upgrade of a store written at the previous
//! schema version is in `store_history_upgrade`).

use std::collections::HashMap;
use std::sync::Arc;

use crisp_relay::clock::Clock;
use crisp_relay::store::{
    Accepted, AttemptRow, DeliveryFilter, DeliveryState, NewDelivery, NewEvent, Op, Store,
    ThreadRef, ThreadState,
};

use crate::store_engines::{Engine, both_engines};

both_engines!(
    attempts_are_recorded_for_retries_then_delivery_and_for_a_dead_letter,
    only_the_last_20_attempts_of_a_delivery_are_kept_across_replays,
    attempts_go_with_their_pruned_or_purged_deliveries,
    each_filter_narrows_the_recent_deliveries,
    pages_of_recent_deliveries_follow_each_other_newest_first,
    conversations_list_threads_with_last_activity_and_replies,
);

pub(crate) const T0: i64 = 1_700_000_000_000;

/// Accepts event `name` (in `conversation`) with one delivery per target;
/// answers the deliveries' ids, in the targets' order.
async fn accept(
    store: &dyn Store,
    name: &str,
    conversation: Option<&str>,
    targets: &[&str],
) -> Vec<i64> {
    let event = NewEvent {
        received_at_ms: T0,
        website_id: "w".into(),
        name: name.into(),
        timestamp_ms: T0,
        body: format!(r#"{{"website_id":"w","event":"{name}","data":{{}}}}"#),
        conversation: conversation.map(str::to_owned),
        dedupe: None,
    };
    let deliveries = targets
        .iter()
        .map(|t| NewDelivery {
            route: "r".into(),
            target: (*t).into(),
            template: Some("tpl".into()),
        })
        .collect();
    let Accepted::New(event_id) = store.accept(event, deliveries).await.unwrap() else {
        panic!("no dedupe key: never a duplicate");
    };
    let rows = store.deliveries().await.unwrap();
    rows.iter()
        .filter(|r| r.event_id == event_id)
        .map(|r| r.id)
        .collect()
}

pub(crate) fn retry(id: i64, attempts: i64, status: u16, at_ms: i64) -> Op {
    Op::Retry {
        id,
        attempts,
        next_attempt_at_ms: 0,
        status: Some(status),
        error: format!("HTTP {status}"),
        at_ms,
        latency_ms: Some(7),
    }
}

pub(crate) fn delivered(id: i64, attempts: i64, at_ms: i64) -> Op {
    Op::Delivered {
        id,
        attempts,
        status: Some(200),
        at_ms,
        latency_ms: Some(5),
    }
}

fn dead(id: i64, attempts: i64, at_ms: i64) -> Op {
    Op::Dead {
        id,
        attempts,
        status: Some(400),
        error: "HTTP 400: bad".into(),
        at_ms,
        latency_ms: Some(3),
    }
}

/// (attempt, status, outcome) of each attempt kept.
pub(crate) fn outline(attempts: &[AttemptRow]) -> Vec<(i64, Option<i64>, &str)> {
    attempts
        .iter()
        .map(|a| (a.attempt, a.status, a.outcome.as_str()))
        .collect()
}

async fn attempts_are_recorded_for_retries_then_delivery_and_for_a_dead_letter(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let ids = accept(&*store, "message:send", None, &["a", "b", "c", "d"]).await;
    store.apply(retry(ids[0], 1, 500, T0 + 1)).await.unwrap();
    store.apply(retry(ids[0], 2, 500, T0 + 2)).await.unwrap();
    store.apply(delivered(ids[0], 3, T0 + 3)).await.unwrap();
    store.apply(dead(ids[1], 1, T0 + 4)).await.unwrap();
    // A result that changes nothing (the row is no longer pending) records
    // nothing: history and state agree.
    assert_eq!(store.apply(retry(ids[1], 2, 503, T0 + 5)).await.unwrap(), 0);
    // Results committed together: a run of deliveries is one statement.
    let a = store
        .apply_later(delivered(ids[2], 1, T0 + 6))
        .await
        .unwrap();
    let b = store
        .apply_later(delivered(ids[3], 1, T0 + 7))
        .await
        .unwrap();
    assert_eq!((a.wait().await.unwrap(), b.wait().await.unwrap()), (1, 1));

    let first = store.attempts_of(ids[0]).await.unwrap();
    assert_eq!(
        outline(&first),
        vec![
            (1, Some(500), "retry"),
            (2, Some(500), "retry"),
            (3, Some(200), "delivered")
        ]
    );
    assert_eq!(
        first.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
        vec![T0 + 1, T0 + 2, T0 + 3]
    );
    assert_eq!(first[0].error.as_deref(), Some("HTTP 500"));
    assert_eq!(first[0].latency_ms, Some(7));
    assert_eq!(first[2].error, None);
    assert!(first.iter().all(|a| a.delivery_id == ids[0]));
    let second = store.attempts_of(ids[1]).await.unwrap();
    assert_eq!(outline(&second), vec![(1, Some(400), "dead")]);
    assert_eq!(second[0].error.as_deref(), Some("HTTP 400: bad"));
    for (id, at) in [(ids[2], T0 + 6), (ids[3], T0 + 7)] {
        let run = store.attempts_of(id).await.unwrap();
        assert_eq!(outline(&run), vec![(1, Some(200), "delivered")]);
        assert_eq!((run[0].at_ms, run[0].latency_ms), (at, Some(5)));
    }
    assert!(store.attempts_of(999).await.unwrap().is_empty());
    store.close().await;
}

async fn only_the_last_20_attempts_of_a_delivery_are_kept_across_replays(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let id = accept(&*store, "message:send", None, &["a"]).await[0];
    for n in 1..=25 {
        store.apply(retry(id, n, 503, T0 + n)).await.unwrap();
    }
    let kept = store.attempts_of(id).await.unwrap();
    assert_eq!(
        kept.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        (6..=25).collect::<Vec<_>>()
    );
    store.apply(dead(id, 26, T0 + 26)).await.unwrap();
    // A replay starts the count again; the history goes on, still capped.
    store
        .apply(Op::Replay {
            id: Some(id),
            target: None,
        })
        .await
        .unwrap();
    store.apply(retry(id, 1, 502, T0 + 27)).await.unwrap();
    store.apply(delivered(id, 2, T0 + 28)).await.unwrap();
    let kept = store.attempts_of(id).await.unwrap();
    assert_eq!(kept.len(), 20);
    assert_eq!(
        kept.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
        (T0 + 9..=T0 + 28).collect::<Vec<_>>()
    );
    assert_eq!(
        outline(&kept[17..]),
        vec![
            (26, Some(400), "dead"),
            (1, Some(502), "retry"),
            (2, Some(200), "delivered")
        ]
    );
    store.close().await;
}

async fn attempts_go_with_their_pruned_or_purged_deliveries(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let ids = accept(&*store, "message:send", None, &["a", "b", "c"]).await;
    store.apply(retry(ids[0], 1, 500, T0)).await.unwrap();
    store.apply(delivered(ids[0], 2, T0)).await.unwrap();
    store.apply(dead(ids[1], 1, T0)).await.unwrap();
    store.apply(retry(ids[2], 1, 500, T0)).await.unwrap();
    // Delivered rows older than the cut go, with their attempts; the dead
    // and pending ones stay with theirs.
    let pruned = store.prune(T0 + 3_600_000, 0).await.unwrap();
    assert_eq!(pruned.deliveries, 1);
    assert!(store.attempts_of(ids[0]).await.unwrap().is_empty());
    assert_eq!(store.attempts_of(ids[1]).await.unwrap().len(), 1);
    assert_eq!(store.attempts_of(ids[2]).await.unwrap().len(), 1);
    store
        .apply(Op::PurgeDead {
            before_ms: T0 + 3_600_000,
        })
        .await
        .unwrap();
    assert!(store.attempts_of(ids[1]).await.unwrap().is_empty());
    store
        .apply(Op::PurgePending {
            target: "c".into(),
            template: None,
        })
        .await
        .unwrap();
    assert!(store.attempts_of(ids[2]).await.unwrap().is_empty());
    // A new delivery reusing nothing: its history starts empty.
    let fresh = accept(&*store, "message:send", None, &["a"]).await[0];
    assert!(store.attempts_of(fresh).await.unwrap().is_empty());
    store.close().await;
}

/// Six deliveries in two batches ten seconds apart, named by letter:
/// A (a, s1), B (b, s1): message:send, then C (a, s2): message:updated,
/// D (b): session:set_email; later E (a, s1), F (b, s2): message:send.
/// A and D delivered, B and F dead, C and E pending.
async fn sample(engine: &Engine) -> (Arc<dyn Store>, HashMap<char, i64>) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let ab = accept(&*store, "message:send", Some("w/s1"), &["a", "b"]).await;
    let c = accept(&*store, "message:updated", Some("w/s2"), &["a"]).await[0];
    let d = accept(&*store, "session:set_email", None, &["b"]).await[0];
    store.apply(delivered(ab[0], 1, T0)).await.unwrap();
    store.apply(dead(ab[1], 1, T0)).await.unwrap();
    store.apply(retry(c, 1, 503, T0)).await.unwrap();
    store.apply(delivered(d, 1, T0)).await.unwrap();
    store.close().await;
    let store = engine.open(16, Clock::starting_at(T0 + 10_000)).await;
    let e = accept(&*store, "message:send", Some("w/s1"), &["a"]).await[0];
    let f = accept(&*store, "message:send", Some("w/s2"), &["b"]).await[0];
    store.apply(dead(f, 1, T0 + 10_000)).await.unwrap();
    let ids = HashMap::from([
        ('A', ab[0]),
        ('B', ab[1]),
        ('C', c),
        ('D', d),
        ('E', e),
        ('F', f),
    ]);
    (store, ids)
}

async fn each_filter_narrows_the_recent_deliveries(engine: Engine) {
    let (store, ids) = sample(&engine).await;
    let all = DeliveryFilter::default;
    let s = |v: &str| Some(v.to_owned());
    let cases: Vec<(DeliveryFilter, &str)> = vec![
        (all(), "FEDCBA"),
        (
            DeliveryFilter {
                target: s("a"),
                ..all()
            },
            "ECA",
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::Pending),
                ..all()
            },
            "EC",
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::Delivered),
                ..all()
            },
            "DA",
        ),
        (
            DeliveryFilter {
                state: Some(DeliveryState::Dead),
                ..all()
            },
            "FB",
        ),
        (
            DeliveryFilter {
                event: s("message:send"),
                ..all()
            },
            "FEBA",
        ),
        (
            DeliveryFilter {
                event: s("session:set_email"),
                ..all()
            },
            "D",
        ),
        (
            DeliveryFilter {
                since_ms: Some(T0 + 5_000),
                ..all()
            },
            "FE",
        ),
        (
            DeliveryFilter {
                until_ms: Some(T0 + 5_000),
                ..all()
            },
            "DCBA",
        ),
        (
            DeliveryFilter {
                conversation: s("w/s1"),
                ..all()
            },
            "EBA",
        ),
        (
            DeliveryFilter {
                conversation: s("w/s9"),
                ..all()
            },
            "",
        ),
        (
            DeliveryFilter {
                target: s("b"),
                state: Some(DeliveryState::Dead),
                since_ms: Some(T0 + 5_000),
                ..all()
            },
            "F",
        ),
        (
            DeliveryFilter {
                before_id: Some(ids[&'D']),
                ..all()
            },
            "CBA",
        ),
        (
            DeliveryFilter {
                limit: Some(2),
                ..all()
            },
            "FE",
        ),
    ];
    let name: HashMap<i64, char> = ids.iter().map(|(c, id)| (*id, *c)).collect();
    for (filter, want) in cases {
        let got: String = store
            .recent_deliveries(&filter)
            .await
            .unwrap()
            .iter()
            .map(|d| name[&d.id])
            .collect();
        assert_eq!(got, want, "{filter:?}");
    }
    // What a row says.
    let rows = store.recent_deliveries(&all()).await.unwrap();
    let b = rows.iter().find(|d| d.id == ids[&'B']).unwrap();
    assert_eq!(
        (
            b.event.as_str(),
            b.conversation.as_deref(),
            b.session_id.as_deref()
        ),
        ("message:send", Some("w/s1"), Some("s1"))
    );
    assert_eq!((b.route.as_str(), b.target.as_str()), ("r", "b"));
    assert_eq!(
        (b.template.as_deref(), b.state.as_str()),
        (Some("tpl"), "dead")
    );
    assert_eq!((b.attempts, b.last_status), (1, Some(400)));
    assert_eq!(b.last_error.as_deref(), Some("HTTP 400: bad"));
    assert_eq!(b.created_at_ms / 10_000, T0 / 10_000);
    assert!(b.updated_at_ms >= b.created_at_ms);
    let d = rows.iter().find(|d| d.id == ids[&'D']).unwrap();
    assert_eq!(
        (d.conversation.as_deref(), d.session_id.as_deref()),
        (None, None)
    );
    store.close().await;
}

async fn pages_of_recent_deliveries_follow_each_other_newest_first(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.extend(accept(&*store, "message:send", None, &["a"]).await);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut before_id = None;
    let mut pages = Vec::new();
    loop {
        let filter = DeliveryFilter {
            limit: Some(10),
            before_id,
            ..DeliveryFilter::default()
        };
        let page = store.recent_deliveries(&filter).await.unwrap();
        pages.push(page.len());
        assert!(pages.len() <= 4, "pages do not move on: {pages:?}");
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        seen.extend(page.iter().map(|d| d.id));
    }
    assert_eq!(pages, vec![10, 10, 5, 0]);
    assert_eq!(seen, ids);
    // The limit is capped at 500 and defaults to 100.
    let big = DeliveryFilter {
        limit: Some(100_000),
        ..DeliveryFilter::default()
    };
    assert_eq!(store.recent_deliveries(&big).await.unwrap().len(), 25);
    store.close().await;
}

async fn conversations_list_threads_with_last_activity_and_replies(engine: Engine) {
    let store = engine.open(16, Clock::starting_at(T0)).await;
    let thread = |t: &str, c: &str, th: &str, state| Op::SetThread {
        target: t.into(),
        conversation: c.into(),
        thread: ThreadRef {
            thread: th.into(),
            state,
        },
    };
    store
        .apply(thread("slack", "w/s1", "ts1", ThreadState::Open))
        .await
        .unwrap();
    store
        .apply(thread("discord", "w/s1", "ch1", ThreadState::Archived))
        .await
        .unwrap();
    store
        .apply(thread("slack", "w/s2", "ts2", ThreadState::Open))
        .await
        .unwrap();
    // Two replies to s1 delivered to Crisp, one still pending; none to s2.
    for _ in 0..3 {
        accept(&*store, "reply", Some("w/s1"), &["crisp"]).await;
    }
    let filter = DeliveryFilter {
        event: Some("reply".into()),
        ..DeliveryFilter::default()
    };
    let replies = store.recent_deliveries(&filter).await.unwrap();
    store.apply(delivered(replies[0].id, 1, T0)).await.unwrap();
    store.apply(delivered(replies[1].id, 1, T0)).await.unwrap();
    store.close().await;
    // Later, a visitor writes again in s2: it is the most recent.
    let store = engine.open(16, Clock::starting_at(T0 + 60_000)).await;
    let event = NewEvent {
        received_at_ms: T0 + 60_000,
        website_id: "w".into(),
        name: "message:send".into(),
        timestamp_ms: T0 + 60_000,
        body: "{}".into(),
        conversation: Some("w/s2".into()),
        dedupe: None,
    };
    store.accept(event, Vec::new()).await.unwrap();

    let all = store.conversations(None, 100).await.unwrap();
    let got: Vec<(&str, &str, &str, ThreadState, i64)> = all
        .iter()
        .map(|c| {
            (
                c.target.as_str(),
                c.session_id.as_str(),
                c.thread.as_str(),
                c.state,
                c.replies,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("slack", "s2", "ts2", ThreadState::Open, 0),
            ("discord", "s1", "ch1", ThreadState::Archived, 2),
            ("slack", "s1", "ts1", ThreadState::Open, 2),
        ]
    );
    assert_eq!(all[0].conversation, "w/s2");
    assert_eq!(all[0].last_activity_ms, T0 + 60_000);
    assert!(all[1].last_activity_ms >= T0 && all[1].last_activity_ms < T0 + 60_000);
    assert!(all[2].created_at_ms >= T0);
    let slack = store.conversations(Some("slack"), 100).await.unwrap();
    assert_eq!(
        slack.iter().map(|c| c.thread.as_str()).collect::<Vec<_>>(),
        vec!["ts2", "ts1"]
    );
    assert_eq!(store.conversations(None, 1).await.unwrap().len(), 1);
    assert!(
        store
            .conversations(Some("none"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}
