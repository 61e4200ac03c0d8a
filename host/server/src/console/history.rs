//! The device management operations run through the API
//! (`POST /api/devices/{ep}/dm`, from the console or `wasmdm ctl`) and their
//! outcome, kept per device for the console's History tab next to the
//! campaigns the device took part in.
//!
//! In memory only (a restart forgets them; campaigns are in the store): at
//! most [`PER_DEVICE`] entries per device and [`MAX_DEVICES`] devices, the
//! oldest dropped first. Bodies are looked into only up to the API's own
//! cap on a request ([`crate::http::MAX_JSON_BODY`]) and [`MAX_BODY`] for an
//! answer (a larger answer passes on untouched, recorded without its code).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::{Body, HttpBody, to_bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value as Json, json};

use crate::driver::unix_ms;
use crate::http::AppState;

/// Entries kept per device.
pub const PER_DEVICE: usize = 100;
/// Devices with a history at most (beyond: the device first recorded is dropped).
pub const MAX_DEVICES: usize = 10_000;
/// Largest answer looked into for the device's code.
pub const MAX_BODY: u64 = 64 * 1024;

/// One operation and its outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Unix ms when the answer came.
    pub at: u64,
    /// `read`, `write`, `execute`, ...
    pub op: String,
    /// The LwM2M path.
    pub path: String,
    /// HTTP status of the API's answer.
    pub status: u16,
    /// The device's CoAP code (`2.04`), when it answered.
    pub code: Option<String>,
    /// The API's error message, if any.
    pub error: Option<String>,
}

/// Entries by endpoint, and endpoints in the order they were first recorded.
type Book = (HashMap<String, VecDeque<Entry>>, VecDeque<String>);

/// Histories by endpoint.
#[derive(Debug, Default)]
pub struct DmHistory {
    inner: Mutex<Book>,
}

impl DmHistory {
    /// Adds `entry` to `ep`'s history.
    pub fn record(&self, ep: &str, entry: Entry) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let (map, order) = &mut *guard;
        if !map.contains_key(ep) {
            while map.len() >= MAX_DEVICES {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
            order.push_back(ep.to_string());
        }
        let list = map.entry(ep.to_string()).or_default();
        if list.len() >= PER_DEVICE {
            list.pop_front();
        }
        list.push_back(entry);
    }

    /// `ep`'s entries, newest first.
    pub fn of(&self, ep: &str) -> Vec<Entry> {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.0.get(ep).map(|l| l.iter().rev().cloned().collect()))
            .unwrap_or_default()
    }
}

/// The endpoint of a `POST /api/devices/{ep}/dm` request.
fn dm_endpoint(request: &Request) -> Option<String> {
    if request.method() != Method::POST {
        return None;
    }
    let rest = request.uri().path().strip_prefix("/api/devices/")?;
    let ep = rest.strip_suffix("/dm")?;
    (!ep.is_empty() && !ep.contains('/')).then(|| ep.to_string())
}

/// The paths a composite operation names (`paths`, or the keys or `n` of
/// a write's `values`), comma separated and cut at 256 characters.
fn composite_paths(op: &Json) -> String {
    let names: Vec<&str> = match (&op["paths"], &op["values"]) {
        (Json::Array(a), _) => a.iter().filter_map(Json::as_str).collect(),
        (_, Json::Object(o)) => o.keys().map(String::as_str).collect(),
        (_, Json::Array(a)) => a.iter().filter_map(|r| r["n"].as_str()).collect(),
        _ => Vec::new(),
    };
    let mut text = names.join(",");
    if text.len() > 256 {
        let cut = (0..=256)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Middleware of `/api` (inside authentication): records DM operations.
pub async fn record(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let Some(ep) = dm_endpoint(&request) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, crate::http::MAX_JSON_BODY).await else {
        // Over the API's cap on a request body: refused as the router would.
        return axum::response::IntoResponse::into_response(crate::http::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    };
    let op: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let text = |v: &Json| v.as_str().map(String::from);
    let mut entry = Entry {
        at: unix_ms(),
        op: text(&op["op"]).unwrap_or_else(|| "?".into()),
        path: text(&op["path"]).unwrap_or_else(|| composite_paths(&op)),
        status: response.status().as_u16(),
        code: None,
        error: None,
    };
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_BODY);
    if !small {
        s.console.dm_history.record(&ep, entry);
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(out) = to_bytes(body, MAX_BODY as usize).await else {
        s.console.dm_history.record(&ep, entry);
        return Response::from_parts(parts, Body::empty());
    };
    let answer: Json = serde_json::from_slice(&out).unwrap_or(Json::Null);
    entry.code = text(&answer["code"]);
    entry.error = text(&answer["error"]);
    s.console.dm_history.record(&ep, entry);
    Response::from_parts(parts, Body::from(out))
}

/// JSON of `ep`'s entries.
pub fn view(s: &AppState, ep: &str) -> Json {
    json!(s.console.dm_history.of(ep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry {
            at: i,
            op: "read".into(),
            path: "/3/0".into(),
            status: 200,
            code: Some("2.05".into()),
            error: None,
        }
    }

    #[test]
    fn bounded_per_device_and_in_devices() {
        let h = DmHistory::default();
        for i in 0..(PER_DEVICE as u64 + 5) {
            h.record("a", entry(i));
        }
        let a = h.of("a");
        assert_eq!(a.len(), PER_DEVICE);
        assert_eq!(a[0].at, PER_DEVICE as u64 + 4, "newest first");
        for i in 0..MAX_DEVICES {
            h.record(&format!("d{i}"), entry(0));
        }
        assert!(h.of("a").is_empty(), "the oldest device was dropped");
        assert_eq!(h.of(&format!("d{}", MAX_DEVICES - 1)).len(), 1);
    }
}
