//! The runtime's component log lines, seen through tracing (the runtime
//! mirrors each one) and stamped on arrival: how the benches time "first
//! line of the guest". Included by the benches with `#[path]`; each uses
//! what it needs.
#![allow(dead_code)]

use anyhow::{Context, Result};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

/// A log line, stamped on arrival.
#[derive(Debug)]
pub struct Seen {
    pub at: Instant,
    pub component: String,
    pub source: String,
    pub text: String,
}

#[derive(Default)]
struct Fields {
    component: String,
    source: String,
    text: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        match field.name() {
            "component" => self.component = v,
            "source" => self.source = v,
            "message" => self.text = v,
            _ => {}
        }
    }
}

struct Capture(Mutex<Option<mpsc::UnboundedSender<Seen>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let at = Instant::now();
        let mut f = Fields::default();
        event.record(&mut f);
        if f.component.is_empty() {
            return;
        }
        if let Ok(g) = self.0.lock()
            && let Some(tx) = g.as_ref()
        {
            let _ = tx.send(Seen {
                at,
                component: f.component,
                source: f.source,
                text: f.text,
            });
        }
    }
}

/// Installs the capturing subscriber (once per process); the lines arrive on
/// the receiver.
pub fn capture() -> Result<mpsc::UnboundedReceiver<Seen>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriber = tracing_subscriber::registry().with(Capture(Mutex::new(Some(tx))));
    tracing::subscriber::set_global_default(subscriber)?;
    Ok(rx)
}

/// The next line of `component` that `pred` accepts, within `within`.
pub async fn next_line(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    component: &str,
    within: Duration,
    pred: impl Fn(&Seen) -> bool,
) -> Result<Seen> {
    loop {
        let s = tokio::time::timeout(within, rx.recv())
            .await
            .with_context(|| format!("no log line within {within:?}"))?
            .context("log channel closed")?;
        if s.component == component && pred(&s) {
            return Ok(s);
        }
    }
}
