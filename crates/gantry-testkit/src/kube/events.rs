//! `core/v1` Events as client-go's event recorder writes them: one Event per distinct
//! (object, reason, message), whose `count` and `lastTimestamp` grow when it repeats.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::meta::{format_time, name_of, namespace_of, str_at, uid_of};
use super::registry;
use super::resource::Resource;
use super::store::Store;

/// Who reports an event: `source.component` and, for the kubelet, `source.host`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source {
    pub component: &'static str,
    pub host: Option<&'static str>,
}

pub(crate) const DEPLOYMENT_CONTROLLER: Source = Source {
    component: "deployment-controller",
    host: None,
};
pub(crate) const REPLICASET_CONTROLLER: Source = Source {
    component: "replicaset-controller",
    host: None,
};
pub(crate) const SCHEDULER: Source = Source {
    component: "default-scheduler",
    host: None,
};
pub(crate) const NODE_NAME: &str = "emulator-node";
pub(crate) const KUBELET: Source = Source {
    component: "kubelet",
    host: Some(NODE_NAME),
};

/// One event to record.
pub(crate) struct Occurrence<'a> {
    pub source: Source,
    pub warning: bool,
    pub reason: &'a str,
    pub message: String,
    /// `involvedObject.fieldPath`, e.g. `spec.containers{web}`.
    pub field_path: Option<String>,
}

/// Remembers which Event object each distinct occurrence went to, so repeats update it.
#[derive(Default)]
pub(crate) struct Recorder {
    seen: HashMap<String, (String, String)>,
}

impl Recorder {
    pub fn record(
        &mut self,
        store: &mut Store,
        involved: &Value,
        occurrence: Occurrence<'_>,
        now: DateTime<Utc>,
    ) {
        let kind = str_at(involved, "/kind").unwrap_or_default();
        let namespace = match namespace_of(involved) {
            "" => "default",
            ns => ns,
        }
        .to_owned();
        let type_ = if occurrence.warning {
            "Warning"
        } else {
            "Normal"
        };
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            uid_of(involved),
            occurrence.field_path.as_deref().unwrap_or_default(),
            occurrence.reason,
            occurrence.message,
            type_,
            occurrence.source.component
        );
        let timestamp = format_time(now);
        if let Some((ns, name)) = self.seen.get(&key)
            && let Some(existing) = store.get(Resource::Event, ns, name).cloned()
        {
            let mut event = existing;
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(1) + 1;
            event["count"] = json!(count);
            event["lastTimestamp"] = json!(timestamp);
            let (ns, name) = (ns.clone(), name.clone());
            let _ = registry::update(
                store,
                Resource::Event,
                &ns,
                &name,
                event,
                registry::Subresource::Main,
                false,
            );
            return;
        }
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let mut involved_object = json!({
            "kind": kind,
            "namespace": namespace_of(involved),
            "name": name_of(involved),
            "uid": uid_of(involved),
            "apiVersion": str_at(involved, "/apiVersion").unwrap_or_default(),
            "resourceVersion": str_at(involved, "/metadata/resourceVersion").unwrap_or_default(),
        });
        if let Some(path) = &occurrence.field_path {
            involved_object["fieldPath"] = json!(path);
        }
        let mut source = json!({"component": occurrence.source.component});
        if let Some(host) = occurrence.source.host {
            source["host"] = json!(host);
        }
        let mut name = format!("{}.{nanos:x}", name_of(involved));
        while store.get(Resource::Event, &namespace, &name).is_some() {
            name.push('0');
        }
        let event = json!({
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved_object,
            "reason": occurrence.reason,
            "message": occurrence.message,
            "source": source,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "type": type_,
            "eventTime": null,
            "reportingComponent": occurrence.source.component,
            "reportingInstance": occurrence.source.host.unwrap_or_default(),
        });
        if registry::create(store, Resource::Event, &namespace, event, false, now).is_ok() {
            self.seen.insert(key, (namespace, name));
        }
    }
}
