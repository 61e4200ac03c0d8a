//! A simulated temperature sensor that serves IPSO Temperature (object 3303,
//! instance 0) to the device's LwM2M server through `wasmdm:device/objects`:
//! the host answers Reads and Observes from the values published here, and
//! hands Writes and Executes to the main loop.
//!
//! Config: `interval-ms` (default 1000) between samples; `send-interval-ms`
//! (default: never) between LwM2M Sends of the sensor value and its min/max,
//! for a server that wants reports without observing; `hang = "true"`
//! declares the object and then never takes a request (the device answers
//! them itself when its deadline passes); `probe = "true"` first tries calls
//! the host must refuse and prints each answer (`probe <what>: <answer>`).

wit_bindgen::generate!({
    path: "../../wit",
    world: "app-imports",
});

use std::time::{Duration, Instant};
use wasmdm::device::objects::{
    self, Failure, ObjectDef, Operations, Path, RequestKind, ResourceDef, Value, ValueType,
};
use wasmdm::device::{config, lifecycle, log};

/// IPSO Temperature (OMA LwM2M registry, object 3303 version 1.1).
const TEMPERATURE: u16 = 3303;
const MIN_MEASURED: u16 = 5601;
const MAX_MEASURED: u16 = 5602;
const MIN_RANGE: u16 = 5603;
const MAX_RANGE: u16 = 5604;
const RESET_MIN_MAX: u16 = 5605;
const SENSOR_VALUE: u16 = 5700;
const SENSOR_UNITS: u16 = 5701;
const APPLICATION_TYPE: u16 = 5750;
const DEFAULT_INTERVAL_MS: u64 = 1000;

fn resource(
    id: u16,
    value_type: ValueType,
    operations: Operations,
    mandatory: bool,
) -> ResourceDef {
    ResourceDef {
        id,
        value_type,
        operations,
        multiple: false,
        mandatory,
    }
}

fn definition() -> ObjectDef {
    use Operations::{Execute, Read, ReadWrite};
    use ValueType::{Float, String};
    ObjectDef {
        id: TEMPERATURE,
        version: Some("1.1".to_string()),
        instances: vec![0],
        resources: vec![
            resource(SENSOR_VALUE, Float, Read, true),
            resource(MIN_MEASURED, Float, Read, false),
            resource(MAX_MEASURED, Float, Read, false),
            resource(MIN_RANGE, Float, Read, false),
            resource(MAX_RANGE, Float, Read, false),
            resource(SENSOR_UNITS, String, Read, false),
            resource(RESET_MIN_MAX, String, Execute, false),
            resource(APPLICATION_TYPE, String, ReadWrite, false),
        ],
    }
}

fn at(resource: u16) -> Path {
    Path {
        object: TEMPERATURE,
        instance: 0,
        resource,
        resource_instance: None,
    }
}

fn publish(resource: u16, value: Value) {
    if let Err(e) = objects::set(at(resource), &value) {
        log::log(log::Level::Error, &format!("set {resource}: {e}"));
    }
}

/// A slow, deterministic wave around 21 °C: tests can predict its range.
struct Sensor {
    step: u32,
    min: f64,
    max: f64,
}

impl Sensor {
    fn sample(&mut self) -> f64 {
        let t = f64::from(self.step) * 0.3;
        self.step = self.step.wrapping_add(1);
        let value = ((21.0 + 4.0 * t.sin()) * 100.0).round() / 100.0;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        value
    }
}

fn config_flag(key: &str) -> bool {
    config::get(key).is_some_and(|v| v.trim() == "true")
}

fn config_ms(key: &str) -> Option<Duration> {
    config::get(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
}

/// Calls the host must refuse, each answer on its own line.
fn probe() {
    let show = |what: &str, r: Result<(), String>| match r {
        Ok(()) => println!("probe {what}: accepted"),
        Err(e) => println!("probe {what}: refused: {e}"),
    };
    show(
        "set wrong type",
        objects::set(at(SENSOR_VALUE), &Value::String("hot".to_string())),
    );
    show("set undeclared", objects::set(at(1), &Value::Float(1.0)));
    show(
        "set executable",
        objects::set(at(RESET_MIN_MAX), &Value::String(String::new())),
    );
    show(
        "set too long",
        objects::set(at(APPLICATION_TYPE), &Value::String("x".repeat(2000))),
    );
    show("declare again", objects::declare(&definition()));
    show(
        "declare ungranted",
        objects::declare(&ObjectDef {
            id: 3304,
            ..definition()
        }),
    );
    show(
        "declare core",
        objects::declare(&ObjectDef {
            id: 3,
            ..definition()
        }),
    );
}

fn main() {
    if let Err(e) = objects::declare(&definition()) {
        println!("declare refused: {e}");
        log::log(log::Level::Error, &format!("declare refused: {e}"));
        std::process::exit(1);
    }
    println!("serving /3303/0");
    if config_flag("probe") {
        probe();
    }
    publish(MIN_RANGE, Value::Float(-40.0));
    publish(MAX_RANGE, Value::Float(85.0));
    publish(SENSOR_UNITS, Value::String("Cel".to_string()));
    publish(APPLICATION_TYPE, Value::String("simulated".to_string()));
    let mut sensor = Sensor {
        step: 0,
        min: f64::MAX,
        max: f64::MIN,
    };
    let mut current = sensor.sample();
    publish(SENSOR_VALUE, Value::Float(current));
    publish(MIN_MEASURED, Value::Float(sensor.min));
    publish(MAX_MEASURED, Value::Float(sensor.max));

    if config_flag("hang") {
        // Never takes a request: the device must answer them itself.
        println!("hanging");
        while !lifecycle::wait_for_stop(1000) {}
        return;
    }

    let every = config_ms("interval-ms").unwrap_or(Duration::from_millis(DEFAULT_INTERVAL_MS));
    let send_every = config_ms("send-interval-ms");
    let mut next_sample = Instant::now() + every;
    let mut next_send = send_every.map(|d| Instant::now() + d);
    loop {
        let now = Instant::now();
        if let (Some(at_time), Some(d)) = (next_send, send_every)
            && now >= at_time
        {
            let paths = [at(SENSOR_VALUE), at(MIN_MEASURED), at(MAX_MEASURED)];
            if let Err(e) = objects::send(&paths) {
                log::log(log::Level::Warn, &format!("send: {e}"));
            }
            next_send = Some(now + d);
        }
        if now >= next_sample {
            current = sensor.sample();
            publish(SENSOR_VALUE, Value::Float(current));
            publish(MIN_MEASURED, Value::Float(sensor.min));
            publish(MAX_MEASURED, Value::Float(sensor.max));
            next_sample += every;
            if next_sample < now {
                next_sample = now + every;
            }
            continue;
        }
        let until = next_send.map_or(next_sample, |s| s.min(next_sample));
        let wait =
            u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
        match objects::next_request(wait.max(1)) {
            Some(req) => {
                let outcome = match (req.path.resource, req.kind) {
                    (APPLICATION_TYPE, RequestKind::Write(Value::String(text))) => {
                        // The host publishes the written value once this answers ok.
                        println!("application type set to {text:?}");
                        Ok(())
                    }
                    (RESET_MIN_MAX, RequestKind::Execute(_)) => {
                        sensor.min = current;
                        sensor.max = current;
                        publish(MIN_MEASURED, Value::Float(current));
                        publish(MAX_MEASURED, Value::Float(current));
                        println!("min/max reset to {current}");
                        Ok(())
                    }
                    (_, RequestKind::Write(_)) => Err(Failure::BadRequest),
                    _ => Err(Failure::NotAllowed),
                };
                objects::respond(req.id, outcome);
            }
            None if lifecycle::stop_requested() => break,
            None => {}
        }
    }
    println!("temperature stopped");
}
