//! Several hosts' limiters sharing one API quota through PostgreSQL (`PgQuota`): together they
//! never exceed the rate over any window (allowing the burst), and a 2500 seen by one host
//! pauses and slows the others. Real limiters, a real server, real time (the database's clock
//! is not tokio's); skipped, saying so, without `QC_OFFBOARD_TEST_PG`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qc_offboard::limiter::{Limiter, Rate};
use qc_offboard::store::postgres::PgQuota;

use crate::pg_db::TestDb;

const SCOPE: &str = "https://api.qingcloud.com/iaas/|QYACCESSKEYIDEXAMPLE";

async fn host(db: &TestDb, rate: &str, burst: u32) -> Arc<Limiter> {
    let quota = PgQuota::new(db.open().await, SCOPE);
    Arc::new(Limiter::shared(rate.parse::<Rate>().unwrap(), burst, Arc::new(quota)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_together_keep_one_rate() {
    let Some(db) = TestDb::create("three_hosts_together_keep_one_rate").await else { return };
    let (rate, burst) = (20.0, 2);
    let hosts = [host(&db, "20/s", burst).await, host(&db, "20/s", burst).await, host(&db, "20/s", burst).await];
    let start = Instant::now();
    let mut callers = Vec::new();
    for h in &hosts {
        for _ in 0..2 {
            let h = h.clone();
            callers.push(tokio::spawn(async move {
                let mut went = Vec::new();
                for _ in 0..12 {
                    h.ready().await;
                    went.push(start.elapsed().as_secs_f64());
                }
                went
            }));
        }
    }
    let mut went: Vec<f64> = Vec::new();
    for c in callers {
        went.extend(c.await.unwrap());
    }
    went.sort_by(f64::total_cmp);
    assert_eq!(went.len(), 72);
    // Every window between two calls holds at most its length × rate + burst calls (one more
    // for a sleep woken a moment late, which makes the next gap look short).
    for i in 0..went.len() {
        for j in i..went.len() {
            let calls = (j - i + 1) as f64;
            let allowed = (went[j] - went[i]) * rate + f64::from(burst) + 1.0;
            assert!(calls <= allowed, "{calls} calls in {:.3} s (from call {i}): {went:?}", went[j] - went[i]);
        }
    }
    // And the rate was used: 72 calls at 20/s take about 3.5 s, not three times that (the
    // margin is for a loaded machine).
    let span = went[went.len() - 1] - went[0];
    assert!(span < 9.0, "72 calls took {span:.2} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_seen_by_one_host_pauses_and_slows_the_others() {
    let Some(db) = TestDb::create("a_refusal_seen_by_one_host_pauses_and_slows_the_others").await else { return };
    let (a, b) = (host(&db, "10/s", 1).await, host(&db, "10/s", 1).await);
    a.ready().await;
    b.ready().await;
    // Host a is answered 2500: it halves its rate and pauses (2 s), for every host.
    assert_eq!(a.on_throttle(tokio::time::Instant::now()), Some(5.0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    b.ready().await;
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "host b went {waited:?} into a 2 s pause");
    assert_eq!(b.current_rate(), 5.0, "host b slowed down as host a did");
    // Once, not on every call of the same pause.
    b.ready().await;
    assert_eq!(b.current_rate(), 5.0);
}

/// After a pause the scope's calls go one interval apart: the burst allowance is not spent at
/// the pause's end, into a quota just refused.
#[tokio::test]
async fn the_burst_is_not_spent_at_the_end_of_a_pause() {
    let Some(db) = TestDb::create("the_burst_is_not_spent_at_the_end_of_a_pause").await else { return };
    let store = db.open().await;
    let (interval, burst) = (Duration::from_millis(100), 3);
    let t = chrono::Duration::from_std(interval).unwrap();
    // A pause long enough that the slots are all taken before it ends, however loaded the
    // machine (the slots are only reserved, nobody waits for them).
    let until = store.pause("s", Duration::from_secs(30), interval, burst).await.unwrap();
    let mut slots = Vec::new();
    for _ in 0..3 {
        slots.push(store.take_slot("s", interval, burst).await.unwrap().at);
    }
    assert_eq!(slots, vec![until, until + t, until + t * 2]);
    store.close().await;
}

/// A call that reserved its slot before another host's 2500 does not go during the pause that
/// followed: it waits the pause out and takes a new slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_reserved_before_a_pause_is_not_used_during_it() {
    let Some(db) = TestDb::create("a_slot_reserved_before_a_pause_is_not_used_during_it").await else { return };
    let (a, b) = (host(&db, "2/s", 1).await, host(&db, "2/s", 1).await);
    a.ready().await;
    // Host a's next slot is half a second away; while it sleeps, host b is refused (2 s pause).
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            a.ready().await;
            t.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(b.on_throttle(tokio::time::Instant::now()).is_some());
    let waited = waiting.await.unwrap();
    assert!(waited >= Duration::from_millis(1_800), "host a went {waited:?} after its slot, into b's 2 s pause");
}

/// A host that slows down for another host's 2500 does not share that pause again: seen late
/// (here 0.8 s after it began), a pause shared again outlasted the first host's own and read
/// there as a second refusal, which lowered it again and doubled the pause, back and forth,
/// until three hosts crawled at 1.25 calls a second behind a 32 s pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_s_refusal_is_not_echoed_back() {
    let Some(db) = TestDb::create("another_host_s_refusal_is_not_echoed_back").await else { return };
    let (a, b) = (host(&db, "10/s", 1).await, host(&db, "10/s", 1).await);
    a.ready().await;
    b.ready().await;
    assert_eq!(a.on_throttle(tokio::time::Instant::now()), Some(5.0));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = Instant::now();
    b.ready().await;
    assert_eq!(b.current_rate(), 5.0, "host b slowed down as host a did");
    assert!(t.elapsed() < Duration::from_millis(1_800), "host b waited out host a's pause only: {:?}", t.elapsed());
    for _ in 0..3 {
        a.ready().await;
        b.ready().await;
    }
    assert_eq!((a.current_rate(), b.current_rate()), (5.0, 5.0), "one refusal, one halving");
}
