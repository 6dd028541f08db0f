//! The API quota shared through PostgreSQL (`QC_OFFBOARD_TEST_PG`, see `pg_db`): many hosts
//! taking slots of one scope at once stay within the rate, and a pause after a 2500 holds back
//! every caller of the scope, on every host, until it passes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use qc_offboard::store::postgres::PgStore;
use sqlx::{Connection, PgConnection};

use crate::pg_db::TestDb;

/// The slot a caller reached: take it, sleep its wait, check the database's clock has reached it.
async fn go(store: &PgStore, scope: &str, interval: Duration, burst: u32) -> DateTime<Utc> {
    let slot = store.take_slot(scope, interval, burst).await.unwrap();
    tokio::time::sleep(slot.wait).await;
    slot.at
}

#[tokio::test]
async fn pg_hosts_sharing_a_scope_never_exceed_its_rate() {
    let Some(db) = TestDb::create("pg_hosts_sharing_a_scope_never_exceed_its_rate").await else { return };
    let (interval, burst) = (Duration::from_millis(20), 3);
    let mut workers = Vec::new();
    for _host in 0..4 {
        let store = db.open().await;
        for _ in 0..3 {
            let (store, url) = (store.clone(), db.url.clone());
            workers.push(tokio::spawn(async move {
                let mut conn = PgConnection::connect(&url).await.unwrap();
                let mut slots = Vec::new();
                for _ in 0..8 {
                    let at = go(&store, "https://api.qingcloud.com/iaas/|KEY", interval, burst).await;
                    // The caller slept until its slot by the database's clock.
                    let now: DateTime<Utc> =
                        sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut conn).await.unwrap();
                    assert!(now >= at, "went at {now}, before its slot {at}");
                    slots.push(at);
                }
                slots
            }));
        }
    }
    let mut slots = Vec::new();
    for w in workers {
        slots.extend(w.await.unwrap());
    }
    slots.sort();
    let n = slots.len() as i64;
    assert_eq!(n, 4 * 3 * 8);
    let t = chrono::Duration::from_std(interval).unwrap();
    // Any window of length W holds at most W/T + burst slots, for short and long windows alike.
    for window_slots in [1, 5, 20, 60] {
        let w = t * window_slots;
        let most = slots.iter().map(|&from| slots.iter().filter(|&&s| s >= from && s <= from + w).count()).max();
        let bound = window_slots as usize + burst as usize;
        assert!(most.unwrap() <= bound, "{most:?} slots within {w}, at most {bound} allowed");
    }
    assert!(slots[slots.len() - 1] - slots[0] >= t * (n as i32 - burst as i32));
}

#[tokio::test]
async fn pg_a_pause_holds_back_every_caller_of_the_scope_until_it_passes() {
    let Some(db) = TestDb::create("pg_a_pause_holds_back_every_caller_of_the_scope_until_it_passes").await else {
        return;
    };
    let interval = Duration::from_millis(10);
    let t = chrono::Duration::from_std(interval).unwrap();
    let first = db.open().await;
    assert_eq!(first.take_slot("scope-a", interval, 1).await.unwrap().wait, Duration::ZERO);
    // One host saw a 2500; a shorter pause asked for later keeps the longer one.
    let until = first.pause("scope-a", Duration::from_millis(500), interval, 1).await.unwrap();
    assert_eq!(first.pause("scope-a", Duration::from_millis(50), interval, 1).await.unwrap(), until);

    // Every host's next call of the scope waits for the pause, then they go one interval apart.
    let mut slots = Vec::new();
    for _host in 0..3 {
        let store = db.open().await;
        let slot = store.take_slot("scope-a", interval, 1).await.unwrap();
        assert_eq!(slot.paused_until, Some(until));
        slots.push(slot.at);
    }
    slots.sort();
    assert_eq!(slots, vec![until, until + t, until + t * 2]);
    // Another scope (another account's quota) is not held back.
    let other = first.take_slot("scope-b", interval, 1).await.unwrap();
    assert!(other.at < until && other.paused_until.is_none(), "{other:?}");

    // Once the pause and the slots after it have passed, calls go at once again.
    let now: DateTime<Utc> =
        sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut db.raw().await).await.unwrap();
    tokio::time::sleep((until + t * 3 - now).to_std().unwrap_or_default()).await;
    let after = first.take_slot("scope-a", interval, 1).await.unwrap();
    assert_eq!((after.wait, after.paused_until), (Duration::ZERO, None));
}
