//! A device app: a service that runs until the device asks it to stop
//! (Deactivate, uninstall, upgrade, host shutdown). It reads its settings
//! from the manifest's `[config]`, logs into the device log, and keeps its
//! state in `/data`, the package's own volume, which survives restarts and
//! upgrades.

wit_bindgen::generate!({ path: "wit", world: "app-imports" });

use wasmdm::device::{config, lifecycle, log};

fn main() {
    let interval_ms: u64 = config::get("interval-ms")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1000);
    let mut ticks = std::fs::read_to_string("/data/ticks")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    log::log(log::Level::Info, "{{name}} started");
    loop {
        ticks += 1;
        println!("tick {ticks}");
        if let Err(e) = std::fs::write("/data/ticks", ticks.to_string()) {
            log::log(log::Level::Warn, &format!("cannot keep the count: {e}"));
        }
        // Returns true as soon as the device asks the app to stop: return
        // from main within the manifest's stop-grace-ms.
        if lifecycle::wait_for_stop(interval_ms) {
            break;
        }
    }
    log::log(log::Level::Info, "{{name}} stopping");
}
