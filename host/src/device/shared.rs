//! Objects the engine owns but the driver must also feed events into.
//!
//! The engine holds `Box<dyn Object>`; the driver keeps a second handle to
//! the same `Arc<Mutex<T>>` so it can call the object's own methods (install
//! finished, download failed, ...) without downcasting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmdm_proto::model::{Path, ResourceValue};
use wasmdm_proto::object::{Effect, Object, OpError, ResourceDef};
use wasmdm_proto::objects::Device as DeviceObject;
use wasmdm_proto::objects::device::res as device_res;

/// A shared handle to an object; one clone goes to the engine.
pub struct Shared<T>(Arc<Inner<T>>);

struct Inner<T> {
    value: Mutex<T>,
    /// The object's resource table and version, copied once (they never
    /// change for the objects shared here): the engine borrows them.
    resources: Vec<ResourceDef>,
    version: Option<String>,
    /// Counts the mutable accesses ([`Shared::lock`] and the engine's
    /// mutating operations): the object's [`Object::generation`].
    generation: AtomicU64,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: Object> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(Inner {
            resources: value.resources().to_vec(),
            version: value.version().map(str::to_owned),
            value: Mutex::new(value),
            generation: AtomicU64::new(0),
        }))
    }

    /// Locks the object for any use, changes included (so it counts as a
    /// new generation); a poisoned lock still yields the data (the object's
    /// methods keep it consistent at every return).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.peek()
    }

    /// Locks the object to read it (not a new generation).
    fn peek(&self) -> MutexGuard<'_, T> {
        self.0.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Object> Object for Shared<T> {
    fn id(&self) -> u16 {
        self.peek().id()
    }
    fn version(&self) -> Option<&str> {
        self.0.version.as_deref()
    }
    fn resources(&self) -> &[ResourceDef] {
        &self.0.resources
    }
    fn instances(&self) -> Vec<u16> {
        self.peek().instances()
    }
    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        self.peek().read(instance, resource)
    }
    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.lock().write(instance, resource, value, replace)
    }
    fn write_block(
        &mut self,
        instance: u16,
        resource: u16,
        offset: u64,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.lock()
            .write_block(instance, resource, offset, bytes, last)
    }
    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        self.lock().execute(instance, resource, args)
    }
    fn create(
        &mut self,
        instance: Option<u16>,
        values: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        self.lock().create(instance, values)
    }
    fn delete(&mut self, instance: u16) -> Result<Vec<Effect>, OpError> {
        self.lock().delete(instance)
    }
    fn take_changed(&mut self) -> Vec<Path> {
        self.peek().take_changed()
    }
    /// Only ever changed through `lock()` (the mutex is private): what an
    /// object whose own generation is unknown can still report.
    fn generation(&self) -> Option<u64> {
        Some(self.0.generation.load(Ordering::Acquire))
    }
    /// The wrapped object's own rules (a Write-Composite is all or nothing:
    /// /1 and /9 check every value before any is written).
    fn check_writes(&self, writes: &[wasmdm_proto::object::PlannedWrite]) -> Result<(), OpError> {
        self.peek().check_writes(writes)
    }
    fn writes_answered_later(&self) -> bool {
        self.peek().writes_answered_later()
    }
}

/// Object 3 as the engine sees it: Current Time (13) and Memory Free (10)
/// are taken from the host when they are read (or Current Time written),
/// not on every datagram (reading /proc/meminfo costs a dozen syscalls).
pub struct LiveDevice {
    device: Shared<DeviceObject>,
    /// Unix seconds.
    clock: fn() -> i64,
    /// Available memory in KiB.
    memory: fn() -> Option<u64>,
}

impl LiveDevice {
    pub fn new(
        device: DeviceObject,
        clock: fn() -> i64,
        memory: fn() -> Option<u64>,
    ) -> LiveDevice {
        LiveDevice {
            device: Shared::new(device),
            clock,
            memory,
        }
    }

    fn refresh(&self, device: &mut DeviceObject, resource: u16) {
        match resource {
            device_res::CURRENT_TIME => device.set_now((self.clock)()),
            device_res::MEMORY_FREE => {
                if let Some(kib) = (self.memory)() {
                    device.set_memory_free(kib);
                }
            }
            _ => {}
        }
    }
}

impl Object for LiveDevice {
    fn id(&self) -> u16 {
        self.device.id()
    }
    fn version(&self) -> Option<&str> {
        self.device.version()
    }
    fn resources(&self) -> &[ResourceDef] {
        self.device.resources()
    }
    fn instances(&self) -> Vec<u16> {
        self.device.instances()
    }
    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        let mut device = self.device.lock();
        self.refresh(&mut device, resource);
        device.read(instance, resource)
    }
    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        let mut device = self.device.lock();
        // A written Current Time is kept as an offset from the host's clock.
        self.refresh(&mut device, resource);
        device.write(instance, resource, value, replace)
    }
    /// Write-Composite is all-or-nothing: /3's own check (UTC Offset) first.
    fn check_writes(&self, writes: &[wasmdm_proto::object::PlannedWrite]) -> Result<(), OpError> {
        self.device.lock().check_writes(writes)
    }
    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        self.device.execute(instance, resource, args)
    }
    fn create(
        &mut self,
        instance: Option<u16>,
        values: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        self.device.create(instance, values)
    }
    fn delete(&mut self, instance: u16) -> Result<Vec<Effect>, OpError> {
        self.device.delete(instance)
    }
    fn take_changed(&mut self) -> Vec<Path> {
        self.device.take_changed()
    }
    // No `generation`: Current Time and Memory Free change on their own.
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmdm_proto::model::Value;
    use wasmdm_proto::objects::DeviceInfo;

    fn device() -> LiveDevice {
        LiveDevice::new(
            DeviceObject::new(DeviceInfo {
                model: "m".into(),
                serial: "s".into(),
                firmware_version: "1".into(),
                software_version: "1".into(),
                device_type: "t".into(),
            }),
            || 1_000,
            || Some(4242),
        )
    }

    fn int(v: Option<ResourceValue>) -> i64 {
        match v {
            Some(ResourceValue::Single(Value::Integer(i) | Value::Time(i))) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn generation_counts_mutable_access_only() {
        use wasmdm_proto::swmgmt::{SoftwareManagement, SwMgmtConfig};
        let sm = Shared::new(SoftwareManagement::new(SwMgmtConfig::default()));
        let mut engine: Box<dyn Object> = Box::new(sm.clone());
        let g0 = engine.generation().unwrap();
        let _ = engine.instances();
        let _ = engine.read(0, 7);
        let _ = engine.take_changed();
        assert_eq!(engine.generation(), Some(g0), "reads change nothing");
        engine.create(Some(0), Vec::new()).unwrap();
        let g1 = engine.generation().unwrap();
        assert_ne!(g1, g0);
        // The driver's own handle: any lock is a possible change.
        drop(sm.lock());
        assert_ne!(engine.generation(), Some(g1));
        // Object 3 reads the host clock: it never reports a generation.
        assert_eq!(device().generation(), None);
    }

    #[test]
    fn time_and_memory_come_from_the_host_when_read() {
        let mut d = device();
        assert_eq!(int(d.read(0, device_res::CURRENT_TIME).unwrap()), 1_000);
        assert_eq!(int(d.read(0, device_res::MEMORY_FREE).unwrap()), 4242);
        // A written time is an offset from the host clock at the write.
        d.write(
            0,
            device_res::CURRENT_TIME,
            ResourceValue::Single(Value::Time(1_500)),
            true,
        )
        .unwrap();
        d.clock = || 1_010;
        assert_eq!(int(d.read(0, device_res::CURRENT_TIME).unwrap()), 1_510);
    }
}
