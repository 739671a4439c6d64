//! Activity slots: how many attempts of a limited activity are in flight,
//! and how fast they may start, per bucket (an activity and a key).
//!
//! A host takes a slot before an attempt starts and gives it back when the
//! attempt ends, however it ends. On one host the board is in memory: a
//! restart abandons every attempt, so every slot with it (and a rate
//! bucket starts full again). On a shared store it is a table every host
//! takes from, whose rows of a dead host are dropped with its tasks.

use super::{Admission, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// What a try for a slot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The slot is the holder's (also when it held it already).
    Taken,
    /// As many attempts as the limit allows are in flight: wait for one to
    /// end.
    Full,
    /// The rate allows the next start this much later.
    Wait(Duration),
}

/// The slots of limited activities, shared by the hosts of one store.
#[async_trait::async_trait]
pub trait SlotBoard: Send + Sync {
    /// Takes a slot of `bucket` for `holder` under `admission`.
    async fn take(&self, bucket: &str, holder: &str, admission: Admission, now_ms: u64) -> Result<Take, StoreError>;

    /// Gives `holder`'s slot of `bucket` back (nothing if it holds none).
    async fn give_back(&self, bucket: &str, holder: &str) -> Result<(), StoreError>;

    /// Slots held, by bucket (buckets holding none are left out).
    async fn held(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Changes when a slot may have been given back (waiters look again):
    /// a hint, not a promise.
    fn released(&self) -> watch::Receiver<u64>;
}

/// A token bucket as stored: `credit_ms` of credit at `at_ms`, one start
/// costing `every_ms`. Credit grows with time up to `burst` starts' worth;
/// a bucket never seen is full.
pub(crate) fn spend(rate: super::Rate, stored: Option<(u64, u64)>, now_ms: u64) -> Result<u64, Duration> {
    let capacity = rate.every_ms.saturating_mul(u64::from(rate.burst));
    let credit = match stored {
        None => capacity,
        Some((credit, at)) => credit.saturating_add(now_ms.saturating_sub(at)).min(capacity),
    };
    match credit.checked_sub(rate.every_ms) {
        Some(left) => Ok(left),
        None => Err(Duration::from_millis(rate.every_ms - credit)),
    }
}

#[derive(Default)]
struct Bucket {
    holders: HashSet<String>,
    /// The token bucket, once a start spent from it.
    credit: Option<(u64, u64)>,
}

/// The board of one host, in memory.
pub struct LocalSlots {
    buckets: Mutex<HashMap<String, Bucket>>,
    released: watch::Sender<u64>,
}

impl Default for LocalSlots {
    fn default() -> Self {
        LocalSlots { buckets: Mutex::default(), released: watch::channel(0).0 }
    }
}

#[async_trait::async_trait]
impl SlotBoard for LocalSlots {
    async fn take(&self, bucket: &str, holder: &str, admission: Admission, now_ms: u64) -> Result<Take, StoreError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(bucket.to_owned()).or_default();
        if b.holders.contains(holder) {
            return Ok(Take::Taken);
        }
        if b.holders.len() as u64 >= u64::from(admission.limit) {
            return Ok(Take::Full);
        }
        if let Some(rate) = admission.rate {
            match spend(rate, b.credit, now_ms) {
                Ok(left) => b.credit = Some((left, now_ms)),
                Err(wait) => return Ok(Take::Wait(wait)),
            }
        }
        b.holders.insert(holder.to_owned());
        Ok(Take::Taken)
    }

    async fn give_back(&self, bucket: &str, holder: &str) -> Result<(), StoreError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut released = false;
        if let Some(b) = buckets.get_mut(bucket) {
            released = b.holders.remove(holder);
            if b.holders.is_empty() && b.credit.is_none() {
                buckets.remove(bucket);
            }
        }
        drop(buckets);
        // Waiters look again only when a slot really came free.
        if released {
            self.released.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(String, u64)> = buckets
            .iter()
            .filter(|(_, b)| !b.holders.is_empty())
            .map(|(name, b)| (name.clone(), b.holders.len() as u64))
            .collect();
        held.sort();
        Ok(held)
    }

    fn released(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Rate;

    /// What every board does, whatever keeps it (also run on PostgreSQL).
    pub(crate) async fn a_board_holds_its_limit_and_rate(board: &dyn SlotBoard) {
        let two = Admission { limit: 2, rate: None };
        assert_eq!(board.take("a", "h1", two, 0).await.unwrap(), Take::Taken);
        assert_eq!(board.take("a", "h1", two, 0).await.unwrap(), Take::Taken, "taking again is no second slot");
        assert_eq!(board.take("a", "h2", two, 0).await.unwrap(), Take::Taken);
        assert_eq!(board.take("a", "h3", two, 0).await.unwrap(), Take::Full);
        assert_eq!(board.take("b", "h3", two, 0).await.unwrap(), Take::Taken, "buckets are apart");
        let released = board.released();
        board.give_back("a", "h1").await.unwrap();
        assert!(released.has_changed().unwrap(), "giving a slot back wakes the waiters");
        board.give_back("a", "nobody").await.unwrap();
        assert_eq!(board.take("a", "h3", two, 0).await.unwrap(), Take::Taken);
        assert_eq!(board.held().await.unwrap(), vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);

        // One start every 100 ms, two at once after a quiet spell.
        let rate = Admission { limit: u32::MAX, rate: Some(Rate { every_ms: 100, burst: 2 }) };
        assert_eq!(board.take("r", "1", rate, 1_000).await.unwrap(), Take::Taken);
        assert_eq!(board.take("r", "2", rate, 1_000).await.unwrap(), Take::Taken);
        assert_eq!(board.take("r", "3", rate, 1_030).await.unwrap(), Take::Wait(Duration::from_millis(70)));
        assert_eq!(board.take("r", "3", rate, 1_100).await.unwrap(), Take::Taken);
        assert_eq!(board.take("r", "4", rate, 1_150).await.unwrap(), Take::Wait(Duration::from_millis(50)));
    }

    #[tokio::test]
    async fn the_local_board_holds_its_limit_and_rate() {
        let board = LocalSlots::default();
        a_board_holds_its_limit_and_rate(&board).await;
        // Waiters try again only when a slot came free (on PostgreSQL the
        // hint also comes late, by NOTIFY, so this is checked here only).
        let mut released = board.released();
        board.give_back("a", "nobody").await.unwrap();
        assert!(!released.has_changed().unwrap(), "giving back a slot nobody held wakes nobody");
        board.give_back("a", "h2").await.unwrap();
        assert!(released.has_changed().unwrap());
        released.borrow_and_update();
    }

    #[test]
    fn a_bucket_fills_with_time_up_to_its_burst() {
        let rate = Rate { every_ms: 10, burst: 3 };
        assert_eq!(spend(rate, None, 5), Ok(20), "a new bucket is full");
        assert_eq!(spend(rate, Some((0, 0)), 4), Err(Duration::from_millis(6)));
        assert_eq!(spend(rate, Some((0, 0)), 1_000_000), Ok(20), "never more than the burst");
        assert_eq!(spend(rate, Some((5, 100)), 90), Err(Duration::from_millis(5)), "a clock going back adds nothing");
    }
}
