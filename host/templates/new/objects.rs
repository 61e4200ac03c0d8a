//! A device app that serves its own LwM2M object to the device's management
//! server: object {{object}} (granted in manifest.toml), instance 0, with
//! resource 0 (a counter the server can read and observe) and resource 1
//! (an Execute that resets it). The host answers Reads and Observes from
//! the values published with `set`; Writes and Executes come to the app
//! through `next-request`.

wit_bindgen::generate!({ path: "wit", world: "app-imports" });

use wasmdm::device::objects::{
    self, ObjectDef, Operations, Path, RequestKind, ResourceDef, Value, ValueType,
};
use wasmdm::device::{config, lifecycle, log};

const OBJECT: u16 = {{object}};
const COUNT: u16 = 0;
const RESET: u16 = 1;

fn at(resource: u16) -> Path {
    Path {
        object: OBJECT,
        instance: 0,
        resource,
        resource_instance: None,
    }
}

fn main() {
    let def = ObjectDef {
        id: OBJECT,
        version: None,
        instances: vec![0],
        resources: vec![
            ResourceDef {
                id: COUNT,
                value_type: ValueType::Integer,
                operations: Operations::Read,
                multiple: false,
                mandatory: true,
            },
            ResourceDef {
                id: RESET,
                value_type: ValueType::String,
                operations: Operations::Execute,
                multiple: false,
                mandatory: false,
            },
        ],
    };
    if let Err(why) = objects::declare(&def) {
        log::log(log::Level::Error, &format!("object {OBJECT} refused: {why}"));
        return;
    }
    let interval_ms: u64 = config::get("interval-ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1000);
    let mut count: i64 = 0;
    loop {
        count += 1;
        if let Err(why) = objects::set(at(COUNT), &Value::Integer(count)) {
            log::log(log::Level::Warn, &format!("set: {why}"));
        }
        println!("count {count}");
        // Serve the server's requests until the next count is due.
        if let Some(request) = objects::next_request(interval_ms) {
            match request.kind {
                RequestKind::Execute(_) if request.path.resource == RESET => {
                    count = 0;
                    objects::respond(request.id, Ok(()));
                }
                _ => objects::respond(request.id, Err(objects::Failure::NotAllowed)),
            }
        }
        if lifecycle::stop_requested() {
            break;
        }
    }
}
