//! Role-agnostic, sans-IO CoAP: message layer, block-wise transfer and
//! observe. The LwM2M client engine uses it; a server can reuse it.
//!
//! Layout:
//! - [`msg`]: codes, option helpers and datagram classification;
//! - [`rng`]: the seeded random source (MIDs, tokens, jitter);
//! - [`endpoint`]: MIDs, retransmission, dedup, NSTART (RFC 7252 §4);
//! - [`block`]: Block1 assembly, Block2 serving and the Block2 download session (RFC 7959);
//! - [`observe`]: write-attributes and the observation registry (RFC 7641, LwM2M §5.1.1).

pub mod block;
pub mod endpoint;
pub mod msg;
pub mod observe;
pub mod rng;

pub use endpoint::{Endpoint, EndpointEvent, ExchangeId, InboundRequest, Params, Transmit};
pub use msg::Code;
