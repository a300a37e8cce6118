//! The object store: every object by resource, namespace and name, a global resource version
//! that every write increments (as etcd's revision does), and a bounded history of changes that
//! watches replay.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::meta::{name_of, namespace_of};
use super::resource::Resource;

/// `(resource, namespace, name)`; the namespace is `""` for cluster-scoped objects.
pub(crate) type Key = (Resource, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// One change, as watches replay it.
#[derive(Clone, Debug)]
pub(crate) struct WatchEvent {
    pub rv: u64,
    pub resource: Resource,
    pub change: Change,
    pub object: Value,
    /// The object before a modification, so a watch with a selector can tell an object that
    /// stopped matching (DELETED for that watch) from one that started to (ADDED).
    pub previous: Option<Value>,
}

pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<WatchEvent>,
    history_limit: usize,
    /// Changes up to this resource version have left the history.
    compacted: u64,
    rng: Rng,
    rv_tx: watch::Sender<u64>,
}

/// Alphabet of generated name suffixes (`k8s.io/apimachinery/pkg/util/rand`): no vowels, no
/// look-alike characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Store {
    pub fn new(history_limit: usize, rv_tx: watch::Sender<u64>) -> Store {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(std::process::id());
        Store {
            objects: BTreeMap::new(),
            // Real clusters never start at 1; neither do we, so nothing relies on small numbers.
            rv: 1000,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1000,
            rng: Rng(seed | 1),
            rv_tx,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
    }

    /// Every object of `resource`, in `namespace` if given, in key order.
    pub fn list<'a>(
        &'a self,
        resource: Resource,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .range((resource, String::new(), String::new())..)
            .take_while(move |((r, _, _), _)| *r == resource)
            .filter(move |((_, ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, v)| v)
    }

    /// Clones of [`Store::list`], for callers that write while iterating.
    pub fn list_owned(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.list(resource, namespace).cloned().collect()
    }

    /// Stores `object` (new or replacing), gives it the next resource version and records the
    /// change. Returns the stored object.
    pub fn put(&mut self, resource: Resource, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = key_of(resource, &object);
        let previous = self.objects.insert(key, object.clone());
        let change = if previous.is_some() {
            Change::Modified
        } else {
            Change::Added
        };
        self.record(WatchEvent {
            rv: self.rv,
            resource,
            change,
            object: object.clone(),
            previous,
        });
        object
    }

    /// Removes an object for good. The DELETED event carries the object with the resource
    /// version of the deletion, as etcd reports it.
    pub fn remove(&mut self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .remove(&(resource, namespace.to_owned(), name.to_owned()))?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(WatchEvent {
            rv: self.rv,
            resource,
            change: Change::Deleted,
            object: object.clone(),
            previous: None,
        });
        Some(object)
    }

    fn record(&mut self, event: WatchEvent) {
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        self.rv_tx.send_replace(self.rv);
    }

    /// The changes after resource version `after`, or `Err(oldest)` when some of them have
    /// already left the history.
    pub fn changes_since(&self, after: u64) -> Result<impl Iterator<Item = &WatchEvent>, u64> {
        if after < self.compacted {
            return Err(self.compacted + 1);
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Ok(self.history.range(start..))
    }

    /// A random RFC 4122 version 4 UID.
    pub fn uid(&mut self) -> String {
        let a = self.rng.next();
        let b = self.rng.next();
        let hex = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-{}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            ["8", "9", "a", "b"][(b % 4) as usize],
            &hex[17..20],
            &hex[20..32]
        )
    }

    /// `n` random characters for generated names.
    pub fn suffix(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| ALPHANUMS[(self.rng.next() % ALPHANUMS.len() as u64) as usize] as char)
            .collect()
    }
}

pub(crate) fn key_of(resource: Resource, object: &Value) -> Key {
    let namespace = if resource.namespaced() {
        namespace_of(object).to_owned()
    } else {
        String::new()
    };
    (resource, namespace, name_of(object).to_owned())
}

/// xorshift64*: good enough for names and UIDs, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: usize) -> Store {
        Store::new(limit, watch::channel(0).0)
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn every_write_increments_the_resource_version() {
        let mut store = store(10);
        let start = store.rv();
        let first = store.put(Resource::Pod, pod("a"));
        let second = store.put(Resource::Pod, pod("a"));
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(rv(&second).parse::<u64>().unwrap() > rv(&first).parse::<u64>().unwrap());
        let removed = store.remove(Resource::Pod, "default", "a").unwrap();
        assert_eq!(rv(&removed), store.rv().to_string());
        let changes: Vec<Change> = store
            .changes_since(start)
            .ok()
            .into_iter()
            .flatten()
            .map(|e| e.change)
            .collect();
        assert_eq!(changes, [Change::Added, Change::Modified, Change::Deleted]);
    }

    #[test]
    fn history_is_bounded() {
        let mut store = store(2);
        let start = store.rv();
        for name in ["a", "b", "c", "d"] {
            store.put(Resource::Pod, pod(name));
        }
        assert!(store.changes_since(start).is_err());
        assert_eq!(store.changes_since(start + 2).ok().unwrap().count(), 2);
        assert_eq!(store.list(Resource::Pod, Some("default")).count(), 4);
        assert_eq!(store.list(Resource::Deployment, None).count(), 0);
    }

    #[test]
    fn uids_look_like_uuids() {
        let mut store = store(1);
        let uid = store.uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        assert_ne!(uid, store.uid());
    }
}
