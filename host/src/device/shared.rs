//! Objects the engine owns but the driver must also feed events into.
//!
//! The engine holds `Box<dyn Object>`; the driver keeps a second handle to
//! the same `Arc<Mutex<T>>` so it can call the object's own methods (install
//! finished, download failed, ...) without downcasting.

use std::sync::{Arc, Mutex, MutexGuard};
use wasmdm_proto::model::{Path, ResourceValue};
use wasmdm_proto::object::{Effect, Object, OpError, ResourceDef};

/// A shared handle to an object; one clone goes to the engine.
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(Mutex::new(value)))
    }

    /// Locks the object; a poisoned lock still yields the data (the object's
    /// methods keep it consistent at every return).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Object> Object for Shared<T> {
    fn id(&self) -> u16 {
        self.lock().id()
    }
    fn version(&self) -> Option<&'static str> {
        self.lock().version()
    }
    fn resources(&self) -> &'static [ResourceDef] {
        self.lock().resources()
    }
    fn instances(&self) -> Vec<u16> {
        self.lock().instances()
    }
    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        self.lock().read(instance, resource)
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
        self.lock().take_changed()
    }
}
