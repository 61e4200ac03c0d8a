//! App objects in the device (issue 14): the runtime's
//! [`AppObjectEvent`]s become [`AppObject`]s of the LwM2M client, and the
//! server's Writes and Executes on them ([`Effect::App`]) go to the app.
//!
//! - Declared: the object joins the client (Registration Update); Changed:
//!   its published values are stored and observers notified; Withdrawn: it
//!   leaves (its observations end, its held requests get 5.03, Update);
//!   Send: the client POSTs the values to `/dp`.
//! - A Write/Execute is handed to [`Runtime::app_request`] on a spawned
//!   task, with `app-request-timeout-ms` for all the request's values
//!   together; the answer comes back through a channel and completes (2.04)
//!   or fails (4.00/4.05/5.00/5.03) the held response. The device loop
//!   never waits for an app.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use wasmdm_proto::client::{Client, PendingId};
use wasmdm_proto::model::{DataType, Path, Value};
use wasmdm_proto::object::{AppRequest, Effect, OpError, Operations, ResourceDef};
use wasmdm_proto::objects::app::{APP_RESOURCE_NAME, AppObject, MAX_APP_OBJECTS};

use super::shared::Shared;
use crate::runtime::{
    AppFailure, AppObjectDef, AppObjectEvent, AppOperations, AppPath, AppRequestKind,
    AppResourceDef, AppValue, AppValueType, Runtime,
};

/// The answer to one held Write/Execute, from its task.
#[derive(Debug)]
pub(super) struct AppAnswer {
    pending: PendingId,
    result: Result<(), AppFailure>,
    /// The values written, stored once the app accepted them (a Read right
    /// after the 2.04 shows them).
    written: Vec<(Path, Value)>,
}

/// The app objects the client serves, and the answers channel.
pub(super) struct Apps {
    served: BTreeMap<u16, Shared<AppObject>>,
    timeout: Duration,
    answers_tx: mpsc::UnboundedSender<AppAnswer>,
    pub(super) answers_rx: mpsc::UnboundedReceiver<AppAnswer>,
}

impl Apps {
    /// `timeout`: how long the app has to answer a Write or Execute.
    pub(super) fn new(timeout: Duration) -> Apps {
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        Apps {
            served: BTreeMap::new(),
            timeout,
            answers_tx,
            answers_rx,
        }
    }

    /// Applies one runtime event to the client.
    pub(super) fn on_event(&mut self, client: &mut Client, now: Instant, event: AppObjectEvent) {
        match event {
            AppObjectEvent::Declared {
                package,
                component,
                def,
            } => {
                let id = def.id;
                if self.served.remove(&id).is_some() {
                    // Declared again (the app restarted): the new one replaces it.
                    client.remove_object(now, id);
                }
                if self.served.len() >= MAX_APP_OBJECTS {
                    warn!(%package, %component, object = id, "app object refused: {MAX_APP_OBJECTS} already served");
                    return;
                }
                let object = match app_object(&def) {
                    Ok(o) => Shared::new(o),
                    Err(e) => {
                        warn!(%package, %component, object = id, "app object refused: {e}");
                        return;
                    }
                };
                if let Err(e) = client.add_object(now, Box::new(object.clone())) {
                    warn!(%package, %component, object = id, "app object refused: {e}");
                    return;
                }
                info!(%package, %component, object = id, "app object served");
                self.served.insert(id, object);
            }
            AppObjectEvent::Changed { values } => {
                let mut changed = Vec::new();
                for (path, value) in values {
                    let Some(object) = self.served.get(&path.object) else {
                        continue;
                    };
                    let set = object.lock().set(
                        path.instance,
                        path.resource,
                        path.resource_instance,
                        proto_value(value),
                    );
                    match set {
                        Ok(p) => changed.push(p),
                        Err(e) => debug!(%path, "app value not kept: {e}"),
                    }
                }
                client.resources_changed(now, &changed);
            }
            AppObjectEvent::Withdrawn { object } => {
                if self.served.remove(&object).is_some() {
                    client.remove_object(now, object);
                    info!(object, "app object withdrawn");
                }
            }
            AppObjectEvent::Send { paths } => {
                let paths: Vec<Path> = paths.iter().map(|p| proto_path(*p)).collect();
                match client.send(now, &paths) {
                    Ok(()) => debug!(paths = paths.len(), "send"),
                    Err(e) => warn!("app Send not sent: {e}"),
                }
            }
        }
    }

    /// Hands a held request's app effects to the runtime on `tasks`.
    pub(super) fn request(
        &self,
        runtime: &Runtime,
        tasks: &tokio::runtime::Handle,
        pending: PendingId,
        effects: Vec<Effect>,
    ) {
        let (runtime, tx, timeout) = (runtime.clone(), self.answers_tx.clone(), self.timeout);
        tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut written = Vec::new();
            let mut result = Ok(());
            for effect in effects {
                let Effect::App { path, request } = effect else {
                    continue;
                };
                let (Some(app_path), Some(kind)) = (app_path(path), app_kind(&request)) else {
                    result = Err(AppFailure::BadRequest);
                    break;
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                // The runtime keeps the deadline; the timeout only guards the
                // held response against a request that never resolves.
                let asked = runtime.app_request(app_path, kind, left);
                result = tokio::time::timeout(left + Duration::from_millis(100), asked)
                    .await
                    .unwrap_or(Err(AppFailure::Unavailable));
                if result.is_err() {
                    break;
                }
                if let AppRequest::Write(value) = request {
                    written.push((path, value));
                }
            }
            let _ = tx.send(AppAnswer {
                pending,
                result,
                written,
            });
        });
    }

    /// Answers the held request; stores the values written first.
    pub(super) fn answered(&mut self, client: &mut Client, now: Instant, answer: AppAnswer) {
        match answer.result {
            Ok(()) => {
                let mut changed = Vec::new();
                for (path, value) in answer.written {
                    let (Some(object), Some(i), Some(r)) =
                        (self.served.get(&path.object), path.instance, path.resource)
                    else {
                        continue;
                    };
                    // Write-only resources keep no value.
                    if let Ok(p) = object.lock().set(i, r, path.resource_instance, value) {
                        changed.push(p);
                    }
                }
                client.resources_changed(now, &changed);
                client.complete(now, answer.pending);
            }
            Err(failure) => client.fail(now, answer.pending, op_error(failure)),
        }
    }
}

/// True for the effects of a Write/Execute on an app object.
pub(super) fn is_app_request(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::App { .. }))
}

/// The response an app's failure gets (contract: 4.00, 4.05, 5.00, 5.03).
fn op_error(failure: AppFailure) -> OpError {
    match failure {
        AppFailure::BadRequest => OpError::BadRequest("refused by the app".into()),
        AppFailure::NotAllowed => OpError::MethodNotAllowed("refused by the app"),
        AppFailure::Internal => OpError::Internal("the app failed".into()),
        AppFailure::Unavailable => {
            OpError::ServiceUnavailable("the app did not answer in time or is gone".into())
        }
    }
}

/// The client-side object for an app's declaration.
fn app_object(def: &AppObjectDef) -> Result<AppObject, OpError> {
    let resources = def.resources.iter().map(resource_def).collect();
    AppObject::new(
        def.id,
        def.version.clone(),
        def.instances.clone(),
        resources,
    )
}

fn resource_def(d: &AppResourceDef) -> ResourceDef {
    let execute = d.operations == AppOperations::Execute;
    ResourceDef {
        id: d.id,
        name: APP_RESOURCE_NAME,
        operations: match d.operations {
            AppOperations::Read => Operations::Read,
            AppOperations::Write => Operations::Write,
            AppOperations::ReadWrite => Operations::ReadWrite,
            AppOperations::Execute => Operations::Execute,
        },
        multiple: d.multiple && !execute,
        mandatory: d.mandatory,
        data_type: if execute {
            DataType::None
        } else {
            data_type(d.value_type)
        },
    }
}

fn data_type(t: AppValueType) -> DataType {
    match t {
        AppValueType::String => DataType::String,
        AppValueType::Integer => DataType::Integer,
        AppValueType::Unsigned => DataType::Unsigned,
        AppValueType::Float => DataType::Float,
        AppValueType::Boolean => DataType::Boolean,
        AppValueType::Opaque => DataType::Opaque,
        AppValueType::Time => DataType::Time,
    }
}

fn proto_value(v: AppValue) -> Value {
    match v {
        AppValue::String(s) => Value::String(s),
        AppValue::Integer(i) => Value::Integer(i),
        AppValue::Unsigned(u) => Value::Unsigned(u),
        AppValue::Float(f) => Value::Float(f),
        AppValue::Boolean(b) => Value::Boolean(b),
        AppValue::Opaque(b) => Value::Opaque(b),
        AppValue::Time(t) => Value::Time(t),
    }
}

/// The app's form of a written value; object and core links are no app type.
fn app_value(v: &Value) -> Option<AppValue> {
    Some(match v {
        Value::String(s) => AppValue::String(s.clone()),
        Value::Integer(i) => AppValue::Integer(*i),
        Value::Unsigned(u) => AppValue::Unsigned(*u),
        Value::Float(f) => AppValue::Float(*f),
        Value::Boolean(b) => AppValue::Boolean(*b),
        Value::Opaque(b) => AppValue::Opaque(b.clone()),
        Value::Time(t) => AppValue::Time(*t),
        Value::ObjLink(_) | Value::CoreLink(_) => return None,
    })
}

fn app_kind(request: &AppRequest) -> Option<AppRequestKind> {
    Some(match request {
        AppRequest::Write(v) => AppRequestKind::Write(app_value(v)?),
        AppRequest::Execute(args) => AppRequestKind::Execute(args.clone()),
    })
}

fn proto_path(p: AppPath) -> Path {
    match p.resource_instance {
        Some(ri) => Path::resource_instance(p.object, p.instance, p.resource, ri),
        None => Path::resource(p.object, p.instance, p.resource),
    }
}

fn app_path(p: Path) -> Option<AppPath> {
    Some(AppPath {
        object: p.object,
        instance: p.instance?,
        resource: p.resource?,
        resource_instance: p.resource_instance,
    })
}

#[cfg(test)]
#[path = "apps_tests.rs"]
mod tests;
