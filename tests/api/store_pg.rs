//! What only the PostgreSQL engine does: several replicas on one database.
//! Leases and their fencing tokens, wakers across replicas, resends racing
//! on two replicas, migrations started at once, a lost connection, and a
//! URL's password kept out of errors. Each test opens its stores on a
//! schema of its own; without `CRISP_RELAY_TEST_DATABASE_URL` each says
//! it is skipped.

use std::sync::Arc;
use std::time::Duration;

use crisp_relay::clock::Clock;
use crisp_relay::secret::DatabaseUrl;
use crisp_relay::store::{
    Accepted, NewDelivery, NewEvent, Op, PgStore, Store, StoreError, TemplateFilter,
};

use crate::store_engines::{LEASE, PgSchema};

const T0: i64 = 1_700_000_000_000;

fn event(key: Option<&str>) -> NewEvent {
    NewEvent {
        received_at_ms: T0,
        website_id: "w".into(),
        name: "message:send".into(),
        timestamp_ms: T0,
        body: r#"{"website_id":"w","event":"message:send","data":{}}"#.into(),
        conversation: None,
        dedupe: key.map(str::to_owned),
    }
}

fn to(target: &str) -> Vec<NewDelivery> {
    vec![NewDelivery {
        route: "r".into(),
        target: target.into(),
        template: None,
    }]
}

async fn expire(schema: &PgSchema, name: &str) {
    schema
        .execute(&format!(
            "UPDATE leases SET expires_at = now() - interval '1 second' WHERE name = '{name}'"
        ))
        .await;
}

#[tokio::test]
async fn a_lease_is_held_by_one_replica_renewed_released_and_taken_with_a_higher_token() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let a = schema.open(16, Clock::starting_at(T0)).await;
    let b = schema.open(16, Clock::starting_at(T0)).await;
    assert_eq!(a.info().engine, "postgres");
    assert_ne!(a.info().replica, b.info().replica);
    assert_eq!(a.lease_term(), Some(LEASE));

    let fa = a.acquire("target:t").await.unwrap().expect("free lease");
    assert!(b.acquire("target:t").await.unwrap().is_none(), "held by a");
    assert!(a.acquire("target:t").await.unwrap().is_none(), "in force");
    assert!(a.renew(&fa).await.unwrap());
    assert!(!b.renew(&fa).await.unwrap(), "b is not the holder");

    a.release(&fa).await.unwrap();
    assert!(!a.renew(&fa).await.unwrap(), "released");
    let fb = b
        .acquire("target:t")
        .await
        .unwrap()
        .expect("released lease");
    assert!(fb.token > fa.token, "{fb:?} after {fa:?}");
    // a's release of a grant it no longer holds changes nothing.
    a.release(&fa).await.unwrap();
    assert!(a.acquire("target:t").await.unwrap().is_none());

    // Expired: anyone may take it, and the old holder cannot renew it.
    expire(&schema, "target:t").await;
    assert!(!b.renew(&fb).await.unwrap(), "expired");
    let fa2 = a.acquire("target:t").await.unwrap().expect("expired lease");
    assert!(fa2.token > fb.token);

    // Closing a replica gives its leases up at once.
    a.close().await;
    assert!(b.acquire("target:t").await.unwrap().is_some());
    b.close().await;
}

#[tokio::test]
async fn a_fenced_write_is_refused_once_another_replica_took_the_lease() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let a = schema.open(16, Clock::starting_at(T0)).await;
    let b = schema.open(16, Clock::starting_at(T0)).await;
    for _ in 0..3 {
        a.accept(event(None), to("t")).await.unwrap();
    }
    let fence = a.acquire("target:t").await.unwrap().unwrap();
    let dead = |id| Op::Dead {
        id,
        attempts: 1,
        status: Some(400),
        error: "bad".into(),
        at_ms: 0,
        latency_ms: None,
    };
    assert_eq!(a.apply_fenced(dead(1), &fence).await.unwrap(), 1);

    // The lease runs out and replica b takes it over.
    expire(&schema, "target:t").await;
    let taken = b.acquire("target:t").await.unwrap().expect("expired");
    assert!(taken.token > fence.token);

    // a's writes under the old fence are refused and write nothing; an
    // unfenced op in the same commit still applies.
    let refused = a.apply_later_fenced(dead(2), &fence).await.unwrap();
    let free = a.apply_later(dead(3)).await.unwrap();
    match refused.wait().await {
        Err(StoreError::LeaseLost(name)) => assert_eq!(name, "target:t"),
        other => panic!("{other:?}"),
    }
    assert_eq!(free.wait().await.unwrap(), 1);
    assert!(matches!(
        a.apply_fenced(dead(2), &fence).await,
        Err(StoreError::LeaseLost(_))
    ));
    let states: Vec<String> = a
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.state)
        .collect();
    assert_eq!(states, vec!["dead", "pending", "dead"]);
    // The new holder's writes go through.
    assert_eq!(b.apply_fenced(dead(2), &taken).await.unwrap(), 1);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_fenced_write_is_refused_once_the_lease_expires_by_the_database_clock() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    // A short lease that runs out by the database's clock (the store's own
    // clock is frozen far in the past and plays no part).
    let a = schema
        .open_with_lease(16, Clock::starting_at(0), Duration::from_millis(300))
        .await;
    a.accept(event(None), to("t")).await.unwrap();
    let fence = a.acquire("target:t").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        a.apply_fenced(
            Op::Delivered {
                id: 1,
                attempts: 1,
                status: Some(200),
                at_ms: 0,
                latency_ms: None,
            },
            &fence
        )
        .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(!a.renew(&fence).await.unwrap());
    a.close().await;
}

#[tokio::test]
async fn a_commit_on_one_replica_wakes_the_worker_on_another() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let a = schema.open(16, Clock::starting_at(T0)).await;
    let b = schema.open(16, Clock::starting_at(T0)).await;
    let waker = b.waker("t");
    let other = b.waker("u");
    a.accept(event(None), to("t")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waker.notified())
        .await
        .expect("b's worker for t was not woken");
    // Only the target given work.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.notified())
            .await
            .is_err()
    );
    // A replay of every dead letter wakes every target.
    a.apply(Op::Dead {
        id: 1,
        attempts: 1,
        status: None,
        error: "x".into(),
        at_ms: 0,
        latency_ms: None,
    })
    .await
    .unwrap();
    a.apply(Op::Replay {
        id: None,
        target: None,
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), other.notified())
        .await
        .expect("a replay of all did not wake u");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_resend_racing_on_two_replicas_is_stored_once() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let a = schema.open(16, Clock::starting_at(T0)).await;
    let b = schema.open(16, Clock::starting_at(T0)).await;
    for i in 0..20 {
        let key = format!("k{i}");
        let (x, y) = tokio::join!(
            a.accept(event(Some(&key)), to("t")),
            b.accept(event(Some(&key)), to("t"))
        );
        let new = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|r| matches!(r, Accepted::New(_)))
            .count();
        assert_eq!(new, 1, "{key}");
    }
    assert_eq!(a.event_count().await.unwrap(), 20);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_an_empty_schema_migrate_it_once() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            tokio::spawn(
                async move { PgStore::open(&url, LEASE, 16, Clock::starting_at(T0)).await },
            )
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("a concurrent open failed"));
    }
    stores[0].accept(event(None), to("t")).await.unwrap();
    assert_eq!(stores[3].event_count().await.unwrap(), 1);
    for s in &stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_its_connections_being_killed_and_keeps_every_accepted_event() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let store = Arc::new(schema.open(1024, Clock::starting_at(T0)).await);
    let waker = store.waker("t");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            for _ in 0..300 {
                match store.accept(event(None), to("t")).await {
                    Ok(Accepted::New(id)) => ok.push(id),
                    Ok(Accepted::Duplicate) => panic!("no key"),
                    Err(StoreError::Db(_)) => failed += 1,
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Every connection of this test's but this one: the writer's, the
    // read pool's, the listener's (other tests' stores name their own
    // schemas).
    let mut admin = schema.connect().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND application_name = $1",
    )
    .bind(&schema.name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "{killed:?}");
    let (ok, _failed) = writer.await.unwrap();
    assert!(ok.len() > 100, "{} accepted", ok.len());

    // Works again: writes, reads, and the listener is back.
    let id = match store.accept(event(None), to("t")).await.unwrap() {
        Accepted::New(id) => id,
        Accepted::Duplicate => unreachable!(),
    };
    let stored: Vec<i64> = store
        .pending("t", 0, 10_000, &TemplateFilter::Any)
        .await
        .unwrap()
        .iter()
        .map(|d| d.event_id)
        .collect();
    for id in ok.iter().chain([&id]) {
        assert!(stored.contains(id), "accepted event {id} is missing");
    }
    let other = schema.open(16, Clock::starting_at(T0)).await;
    // Drain the permits the reconnect and our own commits left.
    while tokio::time::timeout(Duration::from_millis(300), waker.notified())
        .await
        .is_ok()
    {}
    other.accept(event(None), to("t")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waker.notified())
        .await
        .expect("the listener did not come back");
    other.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_store_closed_refuses_requests() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let store = schema.open(16, Clock::starting_at(T0)).await;
    store.probe().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.accept(event(None), to("t")).await,
        Err(StoreError::Closed)
    ));
}

/// The password of the URL is shown nowhere: not in a connection error,
/// not in the store's `Debug`.
#[tokio::test]
async fn the_password_in_the_url_never_shows() {
    // Nothing listens on port 1: the connection fails.
    let url = DatabaseUrl::parse("postgres://relay:s3cret-pw@127.0.0.1:1/relay").unwrap();
    let err = PgStore::open(&url, LEASE, 16, Clock::starting_at(T0))
        .await
        .unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
    }
    assert!(
        crisp_relay::store::postgres::pending_groups_at(&url)
            .await
            .is_err_and(|e| !e.to_string().contains("s3cret-pw"))
    );

    let Some(schema) = PgSchema::create().await else {
        return;
    };
    // With trust authentication the server never asks for it; it is still
    // in the URL the store was given.
    let mut with_password = schema.url.expose().clone();
    if with_password.password().is_none() {
        with_password.set_password(Some("s3cret-pw")).unwrap();
    }
    let url = DatabaseUrl::parse(with_password.as_str()).unwrap();
    let password = with_password.password().unwrap().to_owned();
    let store = PgStore::open(&url, LEASE, 16, Clock::starting_at(T0))
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains(&password));
    store.close().await;
}

/// `check` reads the queue without creating the schema.
#[tokio::test]
async fn pending_groups_at_reads_without_creating() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    use crisp_relay::store::postgres::pending_groups_at;
    assert_eq!(pending_groups_at(&schema.url).await.unwrap(), None);
    assert_eq!(
        pending_groups_at(&schema.url).await.unwrap(),
        None,
        "created"
    );
    let store = schema.open(16, Clock::starting_at(T0)).await;
    store.accept(event(None), to("t")).await.unwrap();
    store.close().await;
    let groups = pending_groups_at(&schema.url).await.unwrap().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].target.as_str(), groups[0].count), ("t", 1));
}
