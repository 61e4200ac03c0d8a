//! What the LwM2M server wrote to its /1 Server instance (Lifetime, the
//! default periods, Disable Timeout, Notification Storing, Binding, Mute
//! Send) survives a restart, as the server expects of a device's settings.
//!
//! The device state keeps the instance as it is now next to the instance
//! as it was configured (`device.toml`) or provisioned (bootstrap), its
//! base. At start the saved values apply only while that base is unchanged:
//! a new `lifetime` in `device.toml` or a new bootstrap wins over what an
//! older server wrote.

use serde::{Deserialize, Serialize};
use wasmdm_proto::objects::Server;

/// The /1 instance as written, and the base it was written over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerSettings {
    /// As configured or provisioned.
    pub base: Server,
    /// As it is now.
    pub current: Server,
}

impl ServerSettings {
    /// The instance to start with: the saved one while its base is
    /// `provisioned`, else `provisioned`.
    pub(crate) fn restore(saved: Option<ServerSettings>, provisioned: Server) -> ServerSettings {
        match saved {
            Some(s) if s.base == provisioned => s,
            _ => ServerSettings {
                base: provisioned.clone(),
                current: provisioned,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_values_survive_until_the_base_changes() {
        let configured = Server::new(1, 60);
        let mut written = configured.clone();
        written.lifetime = 300;
        written.mute_send = true;
        let saved = ServerSettings {
            base: configured.clone(),
            current: written.clone(),
        };
        // Same configuration: the server's values.
        let s = ServerSettings::restore(Some(saved.clone()), configured);
        assert_eq!(s.current, written);
        // device.toml now says 120 s: the configuration wins.
        let s = ServerSettings::restore(Some(saved), Server::new(1, 120));
        assert_eq!(s.current.lifetime, 120);
        assert!(!s.current.mute_send);
        // Nothing saved yet.
        let s = ServerSettings::restore(None, Server::new(1, 60));
        assert_eq!(s.base, s.current);
    }
}
