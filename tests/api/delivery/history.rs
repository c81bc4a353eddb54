//! The attempt history the real relay records: every send of a delivery,
//! read back from the store file once the relay has stopped.

use super::*;
use crate::fakes::*;
use crisp_relay::store::{DeliveryFilter, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_twice_then_accepting_leaves_three_attempts_500_500_200() {
    let fake = FakeServer::webhook().await;
    fake.fail_next(2, 500, "boom", &[]);
    let url = fake.url("/in/crisp");
    let target = format!("{{kind: webhook, url: \"{url}\", {FAST_RETRY}}}");
    let mut app = TestApp::spawn_with(&config_with(&one_target("crm", &target))).await;
    post_all(&app, 0..1).await;
    fake.wait_for_accepted(1, GUARD).await;
    // A graceful stop commits the results still queued.
    assert!(app.terminate().success());

    let store = open_store(&app.store_path()).await;
    let rows = store
        .recent_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let d = &rows[0];
    assert_eq!((d.state.as_str(), d.attempts), ("delivered", 3));
    assert_eq!(d.target, "crm");
    let attempts = store.attempts_of(d.id).await.unwrap();
    let seen: Vec<(i64, Option<i64>, &str)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status, a.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Some(500), "retry"),
            (2, Some(500), "retry"),
            (3, Some(200), "delivered"),
        ]
    );
    for pair in attempts.windows(2) {
        assert!(pair[0].at_ms <= pair[1].at_ms, "{attempts:?}");
    }
    for a in &attempts {
        assert!(a.latency_ms.is_some_and(|l| l >= 0), "{a:?}");
        if let Some(e) = &a.error {
            assert!(!e.contains(&url) && !e.contains("127.0.0.1"), "{e}");
        }
    }
    assert!(attempts[0].error.is_some() && attempts[2].error.is_none());
    store.close().await;
}
