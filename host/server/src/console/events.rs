//! `GET /api/events`: a server-sent-events stream (HTML Living Standard
//! §9.2) of what changed in devices and campaigns, for the console's live
//! pages.
//!
//! Changes are batched: every [`BATCH`] the stream compares the store with
//! what it last sent and emits at most one `devices` and one `campaigns`
//! event holding every changed entry. A campaign over a thousand devices
//! whose devices notify many times a second thus costs the browser at most
//! two events per batch, never one per notification. The first batch is the
//! full state (`"full": true`), so a page renders from the stream alone.
//!
//! `devices`: `{"full": bool, "changed": [device...], "removed": [endpoint...]}`
//! (device as in `GET /api/console/devices`); `campaigns`: `{"full": bool,
//! "changed": [campaign...]}` (as in `GET /api/console/campaigns`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value as Json, json};

use super::api::{campaign_view, devices_view, inventory_of_job, remember};
use crate::campaign::{Campaign, CampaignStatus};
use crate::http::AppState;
use crate::store::CAMPAIGNS;

/// How often changes are collected into one batch.
pub const BATCH: Duration = Duration::from_millis(500);

/// What one stream last sent.
#[derive(Default)]
struct Tracker {
    devices: HashMap<String, Json>,
    campaigns: HashMap<String, Json>,
    /// Each campaign's header as last seen: a campaign that is not running
    /// and whose header is unchanged is not re-read. (The whole header, not
    /// just its status: a retry between two batches may run and finish.)
    headers: HashMap<String, Json>,
    started: bool,
}

impl Tracker {
    /// The events of one batch (none when nothing changed).
    fn poll(&mut self, s: &AppState) -> Vec<Event> {
        let full = !self.started;
        self.started = true;
        let mut out = Vec::new();
        // Campaigns first: their jobs refresh the software inventory the
        // devices event carries.
        match self.campaigns_changed(s) {
            Ok(changed) if full || !changed.is_empty() => out.push(event(
                "campaigns",
                json!({ "full": full, "changed": changed }),
            )),
            Ok(_) => {}
            Err(e) => tracing::warn!("events: campaigns: {e:?}"),
        }
        match devices_view(s) {
            Ok(list) => {
                let mut changed = Vec::new();
                let mut seen = HashMap::with_capacity(list.len());
                for d in list {
                    let ep = d["endpoint"].as_str().unwrap_or_default().to_string();
                    if self.devices.get(&ep) != Some(&d) {
                        changed.push(d.clone());
                    }
                    seen.insert(ep, d);
                }
                let removed: Vec<String> = self
                    .devices
                    .keys()
                    .filter(|k| !seen.contains_key(*k))
                    .cloned()
                    .collect();
                self.devices = seen;
                if full || !changed.is_empty() || !removed.is_empty() {
                    out.push(event(
                        "devices",
                        json!({ "full": full, "changed": changed, "removed": removed }),
                    ));
                }
            }
            Err(e) => tracing::warn!("events: devices: {e:?}"),
        }
        out
    }

    fn campaigns_changed(&mut self, s: &AppState) -> Result<Vec<Json>, crate::http::ApiError> {
        let headers = s.store.list::<Campaign>(CAMPAIGNS)?;
        let mut changed = Vec::new();
        for h in headers {
            let doc = serde_json::to_value(&h).unwrap_or(Json::Null);
            let settled = h.status != CampaignStatus::Running
                && self.headers.get(&h.id) == Some(&doc)
                && self.campaigns.contains_key(&h.id);
            self.headers.insert(h.id.clone(), doc);
            if settled {
                continue;
            }
            let Some(c) = s.store.get_campaign(&h.id)? else {
                continue;
            };
            let view = campaign_view(&c);
            if self.campaigns.get(&c.id) != Some(&view) {
                for j in &c.jobs {
                    if let Some(inv) = inventory_of_job(j) {
                        remember(&s.console.inventory, &j.endpoint, inv);
                    }
                }
                self.campaigns.insert(c.id.clone(), view.clone());
                changed.push(view);
            }
        }
        Ok(changed)
    }
}

fn event(kind: &str, data: Json) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// Event streams open at once (each reads the store every [`BATCH`]); beyond: 503.
pub const MAX_STREAMS: usize = 32;

pub(crate) async fn events(State(s): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(permit) = s.console.streams.clone().try_acquire_owned() else {
        return crate::http::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("too many event streams open (at most {MAX_STREAMS})"),
        )
        .into_response();
    };
    stream_of(s, permit).into_response()
}

fn stream_of(
    s: AppState,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // One item per batch (possibly no events); the store is read off the
    // async workers. The permit is held as long as the stream lives.
    let batches = stream::unfold(Some((s, Tracker::default(), permit)), |st| async move {
        let (s, mut t, permit) = st?;
        if t.started {
            tokio::time::sleep(BATCH).await;
        }
        let (s, events, t) = tokio::task::spawn_blocking(move || {
            let e = t.poll(&s);
            (s, e, t)
        })
        .await
        .ok()?;
        Some((
            stream::iter(events.into_iter().map(Ok)),
            Some((s, t, permit)),
        ))
    })
    .flatten();
    Sse::new(batches).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
