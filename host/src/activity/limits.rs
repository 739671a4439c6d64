//! Limits on activities' attempts: at most so many in flight at once and
//! so many started per time, per key taken from each call's input, held
//! across every host of a store.
//!
//! Limits live in the activity component's deployment row (by function,
//! `*` for every function without its own), read at most once a second per
//! component. Before each attempt of a limited activity, its host takes a
//! slot of the bucket `<activity>` + key from the slot board, waiting
//! (outside the attempt's timeout) while the bucket is full or its rate
//! has no token; the slot goes back when the attempt ends, however it
//! ends. Retries wait for a slot again; the backoff between them holds
//! none.

use crate::store::{ActivityLimit, Admission, LocalSlots, SlotBoard, Store, Take};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long the limits read from a deployment are used before they are
/// read again (a change made on another host applies within this).
const CONFIG_TTL: Duration = Duration::from_secs(1);

/// The longest a waiter sleeps before it tries again without a hint.
const RETRY_CEILING: Duration = Duration::from_millis(250);

type Limits = Arc<BTreeMap<String, ActivityLimit>>;

/// A bucket: the activity (as its limits name it) and the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName {
    /// `component.function`, or `component.*`.
    pub activity: String,
    /// The key from the call's input ("" without one).
    pub key: String,
}

impl BucketName {
    /// The bucket's name on the slot board.
    fn board_name(&self) -> String {
        format!("{}\u{1f}{}", self.activity, self.key)
    }

    fn from_board_name(name: &str) -> Option<BucketName> {
        let (activity, key) = name.split_once('\u{1f}')?;
        Some(BucketName { activity: activity.to_owned(), key: key.to_owned() })
    }
}

/// The limits of this host's activities and the slots they take.
pub struct Limiter {
    store: Mutex<Option<Store>>,
    config: Mutex<HashMap<String, (Instant, Limits)>>,
    board: RwLock<Arc<dyn SlotBoard>>,
    /// Attempts waiting for a slot on this host, by bucket.
    waiting: Mutex<BTreeMap<BucketName, u64>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            store: Mutex::default(),
            config: Mutex::default(),
            board: RwLock::new(Arc::new(LocalSlots::default())),
            waiting: Mutex::default(),
        }
    }
}

/// A slot taken for one attempt; given back when dropped.
pub struct SlotGuard {
    board: Arc<dyn SlotBoard>,
    bucket: String,
    holder: String,
}

impl SlotGuard {
    /// Forgets a slot that was not taken: nothing to give back.
    fn disarm(mut self) {
        self.bucket.clear();
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (board, bucket, holder) =
            (self.board.clone(), std::mem::take(&mut self.bucket), std::mem::take(&mut self.holder));
        if bucket.is_empty() {
            return; // not limited, or not taken
        }
        // Until it is given back, the slot is one fewer for every host: a
        // failure (the database away for a moment) is tried again.
        let give_back = async move {
            let mut pause = Duration::from_millis(100);
            while let Err(e) = board.give_back(&bucket, &holder).await {
                tracing::warn!(bucket, holder, error = %e, "could not give an activity slot back; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(give_back)),
            Err(_) => tracing::debug!("no runtime to give an activity slot back on"),
        }
    }
}

/// Counts an attempt waiting for a slot while it lives.
struct Waiting<'a> {
    limiter: &'a Limiter,
    bucket: BucketName,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.limiter.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiting.get_mut(&self.bucket) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.bucket);
            }
        }
    }
}

impl Limiter {
    /// Reads limits from `store` from now on.
    pub fn attach(&self, store: Store) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// Takes slots from `board` (every host's) instead of this host's own.
    pub fn share(&self, board: Arc<dyn SlotBoard>) {
        *self.board.write().unwrap_or_else(|e| e.into_inner()) = board;
    }

    /// Forgets the limits read for `component` (they were just changed here).
    pub fn changed(&self, component: &str) {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).remove(component);
    }

    async fn limits_of(&self, component: &str) -> Limits {
        if let Some((read, limits)) = self.config.lock().unwrap_or_else(|e| e.into_inner()).get(component) {
            if read.elapsed() < CONFIG_TTL {
                return limits.clone();
            }
        }
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let limits: Limits = match store {
            None => Limits::default(),
            Some(store) => match store.deployment(component).await {
                Ok(d) => Arc::new(d.map(|d| d.activity_limits).unwrap_or_default()),
                Err(e) => {
                    // Keep what was read last rather than drop the limits.
                    tracing::warn!(component, error = %e, "could not read activity limits; keeping the last ones");
                    let last =
                        self.config.lock().unwrap_or_else(|e| e.into_inner()).get(component).map(|c| c.1.clone());
                    return last.unwrap_or_default();
                }
            },
        };
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(component.to_owned(), (Instant::now(), limits.clone()));
        limits
    }

    /// The bucket and admission of a call of `component.function` with
    /// `input`, if it is limited.
    pub async fn bucket_of(&self, component: &str, function: &str, input: &str) -> Option<(BucketName, Admission)> {
        let limits = self.limits_of(component).await;
        let (scope, limit) = match limits.get(function) {
            Some(limit) => (function, limit),
            None => ("*", limits.get("*")?),
        };
        let key = limit.key_of(input);
        let admission = limit.limits.admission(&key)?;
        Some((BucketName { activity: format!("{component}.{scope}"), key }, admission))
    }

    /// Waits until `holder` holds a slot of the bucket of a call of
    /// `component.function` with `input`, reading the limits again while it
    /// waits (a raised or removed limit lets it go). A store error is
    /// retried: a limit is never skipped. The guard of an activity that is
    /// not limited holds nothing.
    pub async fn take(&self, component: &str, function: &str, input: &str, holder: String) -> SlotGuard {
        let board = self.board.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let Some((bucket, admission)) = self.bucket_of(component, function, input).await else {
                return SlotGuard { board, bucket: String::new(), holder };
            };
            let name = bucket.board_name();
            // Made before the try: dropped during it (the attempt was
            // abandoned), it gives back what the try may have taken.
            let guard = SlotGuard { board: board.clone(), bucket: name.clone(), holder: holder.clone() };
            let mut released = board.released();
            let wait = match board.take(&name, &holder, admission, crate::runtime::now_ms()).await {
                Ok(Take::Taken) => return guard,
                Ok(Take::Full) => {
                    guard.disarm();
                    RETRY_CEILING
                }
                Ok(Take::Wait(wait)) => {
                    guard.disarm();
                    wait.min(RETRY_CEILING)
                }
                Err(e) => {
                    // It may have landed: the guard gives it back.
                    drop(guard);
                    tracing::warn!(bucket = %name, error = %e, "could not take an activity slot; trying again");
                    Duration::from_secs(1)
                }
            };
            if waiting.as_ref().is_none_or(|w| w.bucket != bucket) {
                *self.waiting.lock().unwrap_or_else(|e| e.into_inner()).entry(bucket.clone()).or_default() += 1;
                waiting = Some(Waiting { limiter: self, bucket: bucket.clone() });
                tracing::debug!(bucket = %name, holder, "an activity attempt waits for a slot");
            }
            tokio::select! {
                _ = released.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Attempts waiting on this host and slots held on every host, by
    /// bucket.
    pub async fn buckets(&self) -> Vec<(BucketName, u64, u64)> {
        let board = self.board.read().unwrap_or_else(|e| e.into_inner()).clone();
        let held = board.held().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read activity slots");
            Vec::new()
        });
        let mut all: BTreeMap<BucketName, (u64, u64)> = BTreeMap::new();
        for (name, n) in held {
            if let Some(bucket) = BucketName::from_board_name(&name) {
                all.entry(bucket).or_default().0 = n;
            }
        }
        for (bucket, n) in self.waiting.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            all.entry(bucket.clone()).or_default().1 = *n;
        }
        all.into_iter().map(|(bucket, (held, waiting))| (bucket, held, waiting)).collect()
    }
}
