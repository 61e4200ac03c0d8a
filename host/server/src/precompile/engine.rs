//! What a device's WebAssembly engine accepts, as it reports it in the
//! wasmdm Engine object /26500 (`host/proto/ddf/26500.xml`), kept in the
//! device record and shown by `GET /api/devices/{ep}`. The type and its
//! parser are the protocol core's ([`wasmdm_proto::objects::engine::EngineInfo`]):
//! the object a device serves is the report a server reads.

pub use wasmdm_proto::objects::engine::valid_hash;

/// A device's engine (resources of /26500/0).
pub type DeviceEngine = wasmdm_proto::objects::engine::EngineInfo;

/// The wasmdm Engine object (private range; see the DDF).
pub const ENGINE_OBJECT: u16 = wasmdm_proto::objects::engine::OBJECT_ID;
