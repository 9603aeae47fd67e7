//! Watches: newline-delimited WatchEvents streamed from the store's log
//! of changes, so that kube's `watcher` and `reflector` work against this
//! server with a list-then-watch and with streaming lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::selectors::Selector;
use super::status::ApiError;
use super::store::{Event, Shared};
use super::target::Target;

/// How long a watch stays open when the client does not say.
const DEFAULT_WATCH_SECONDS: u64 = 60;

// A watch: every change of the resource after `resourceVersion` (with "0"
// or none, the objects there are now, as ADDED, then every change), as
// newline-delimited WatchEvents, until `timeoutSeconds`. No periodic
// bookmarks (`allowWatchBookmarks` asks for them, but the API allows a
// server to send none); with `sendInitialEvents=true` (a streaming list)
// the objects there are now come first whatever the version, and then the
// one bookmark that marks their end (`k8s.io/initial-events-end`), as the
// API sends them.
pub(super) fn watch(
    shared: Arc<Shared>,
    target: Target,
    selector: Selector,
    params: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let seconds = match params.get("timeoutSeconds") {
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds {text:?} is not a number"))
        })?,
        None => DEFAULT_WATCH_SECONDS,
    };
    let from = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion {text:?} is not one of this server's"
            ))
        })?),
    };
    let streaming_list = params.get("sendInitialEvents").is_some_and(|s| s == "true");
    let (initial, after, changes) = {
        let store = shared.store();
        let resource = target.resource(&store)?;
        let mut initial: Vec<Value> = match (from, streaming_list) {
            (Some(_), false) => Vec::new(),
            _ => target
                .selected(&store, &selector)
                .map(|object| json!({"type": "ADDED", "object": object}))
                .collect(),
        };
        let after = if streaming_list {
            store.last_revision
        } else {
            from.unwrap_or(store.last_revision)
        };
        if streaming_list {
            initial.push(json!({"type": "BOOKMARK", "object": {
                "apiVersion": target.id.api_version(),
                "kind": resource.kind,
                "metadata": {
                    "resourceVersion": after.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            }}));
        }
        (initial, after, store.changed.subscribe())
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let state = (shared, target, selector, after, changes, Some(initial));
    let stream = futures_util::stream::unfold(state, move |mut state| async move {
        let (shared, target, selector, after, changes, initial) = &mut state;
        if let Some(initial) = initial.take() {
            if !initial.is_empty() {
                return Some((Ok::<_, std::io::Error>(lines(&initial)), state));
            }
        }
        loop {
            let batch: Vec<Value> = {
                let store = shared.store();
                let paused_at = store.watches_paused_at;
                let news: Vec<&Event> = store
                    .events
                    .iter()
                    .filter(|e| e.revision > *after)
                    .take_while(|e| paused_at.is_none_or(|at| e.revision <= at))
                    .collect();
                if let Some(last) = news.last() {
                    *after = last.revision;
                }
                news.into_iter()
                    .filter(|e| e.id == target.id && target.selects(selector, &e.object))
                    .map(|e| json!({"type": e.kind, "object": e.object}))
                    .collect()
            };
            if !batch.is_empty() {
                return Some((Ok(lines(&batch)), state));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

// WatchEvents, one JSON object per line.
fn lines(events: &[Value]) -> Bytes {
    let mut text = String::new();
    for event in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    Bytes::from(text)
}
