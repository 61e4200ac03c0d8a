//! /1 Server: the registration's parameters, as the server may tune them
//! (Core 1.1 §E.2; resource table in the reference §8).

use serde::{Deserialize, Serialize};

use crate::model::{DataType, ResourceValue, Value};
use crate::object::{Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::{def, non_negative, not_allowed, single};

/// The object id.
pub const OBJECT_ID: u16 = 1;

/// Resource ids of Object 1 that we implement.
pub mod res {
    pub const SHORT_SERVER_ID: u16 = 0;
    pub const LIFETIME: u16 = 1;
    pub const DEFAULT_PMIN: u16 = 2;
    pub const DEFAULT_PMAX: u16 = 3;
    pub const DISABLE: u16 = 4;
    pub const DISABLE_TIMEOUT: u16 = 5;
    pub const NOTIFICATION_STORING: u16 = 6;
    pub const BINDING: u16 = 7;
    pub const REGISTRATION_UPDATE_TRIGGER: u16 = 8;
}

static RESOURCES: [ResourceDef; 9] = [
    def(
        res::SHORT_SERVER_ID,
        "Short Server ID",
        Operations::Read,
        false,
        true,
        DataType::Integer,
    ),
    def(
        res::LIFETIME,
        "Lifetime",
        Operations::ReadWrite,
        false,
        true,
        DataType::Integer,
    ),
    def(
        res::DEFAULT_PMIN,
        "Default Minimum Period",
        Operations::ReadWrite,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::DEFAULT_PMAX,
        "Default Maximum Period",
        Operations::ReadWrite,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::DISABLE,
        "Disable",
        Operations::Execute,
        false,
        false,
        DataType::None,
    ),
    def(
        res::DISABLE_TIMEOUT,
        "Disable Timeout",
        Operations::ReadWrite,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::NOTIFICATION_STORING,
        "Notification Storing When Disabled or Offline",
        Operations::ReadWrite,
        false,
        true,
        DataType::Boolean,
    ),
    def(
        res::BINDING,
        "Binding",
        Operations::ReadWrite,
        false,
        true,
        DataType::String,
    ),
    def(
        res::REGISTRATION_UPDATE_TRIGGER,
        "Registration Update Trigger",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
];

/// The one binding we speak: UDP.
pub const BINDING_UDP: &str = "U";

/// One Server instance (id 0) for the one LwM2M server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub short_server_id: u16,
    /// Seconds.
    pub lifetime: u64,
    /// Seconds; absent means 0 (reference §8).
    pub default_pmin: u64,
    /// Seconds; `None`: no default maximum period.
    pub default_pmax: Option<u64>,
    /// Seconds, default 86400.
    pub disable_timeout: u64,
    pub notification_storing: bool,
    pub binding: String,
}

impl Server {
    /// Defaults of Core 1.1 §E.2: pmin 0, no pmax, Disable Timeout 86400 s,
    /// notification storing on, binding U.
    pub fn new(short_server_id: u16, lifetime: u64) -> Self {
        Server {
            short_server_id,
            lifetime,
            default_pmin: 0,
            default_pmax: None,
            disable_timeout: 86_400,
            notification_storing: true,
            binding: BINDING_UDP.to_owned(),
        }
    }
}

impl Object for Server {
    fn id(&self) -> u16 {
        OBJECT_ID
    }
    fn resources(&self) -> &'static [ResourceDef] {
        &RESOURCES
    }
    fn instances(&self) -> Vec<u16> {
        vec![0]
    }

    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        let int = |v: u64| {
            Ok(Some(ResourceValue::Single(Value::Integer(
                i64::try_from(v).unwrap_or(i64::MAX),
            ))))
        };
        match resource {
            res::SHORT_SERVER_ID => int(u64::from(self.short_server_id)),
            res::LIFETIME => int(self.lifetime),
            res::DEFAULT_PMIN => int(self.default_pmin),
            res::DEFAULT_PMAX => match self.default_pmax {
                Some(p) => int(p),
                None => Ok(None),
            },
            res::DISABLE_TIMEOUT => int(self.disable_timeout),
            res::NOTIFICATION_STORING => Ok(Some(ResourceValue::Single(Value::Boolean(
                self.notification_storing,
            )))),
            res::BINDING => Ok(Some(ResourceValue::Single(Value::String(
                self.binding.clone(),
            )))),
            r => Err(not_allowed(&RESOURCES, r, "resource is not readable")),
        }
    }

    /// Lifetime and Binding travel in the Register/Update parameters, so a
    /// change to either asks for a Registration Update (Core 1.1 §6.2.2).
    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        match resource {
            res::LIFETIME => {
                let v = non_negative(value)?;
                if v == 0 {
                    return Err(OpError::BadRequest("lifetime must be at least 1 s".into()));
                }
                let changed = v != self.lifetime;
                self.lifetime = v;
                Ok(if changed {
                    vec![Effect::Persist, Effect::RegistrationUpdate]
                } else {
                    vec![Effect::Persist]
                })
            }
            res::DEFAULT_PMIN => {
                self.default_pmin = non_negative(value)?;
                Ok(vec![Effect::Persist])
            }
            res::DEFAULT_PMAX => {
                self.default_pmax = Some(non_negative(value)?);
                Ok(vec![Effect::Persist])
            }
            res::DISABLE_TIMEOUT => {
                self.disable_timeout = non_negative(value)?;
                Ok(vec![Effect::Persist])
            }
            res::NOTIFICATION_STORING => match single(value)? {
                Value::Boolean(b) => {
                    self.notification_storing = b;
                    Ok(vec![Effect::Persist])
                }
                _ => Err(OpError::BadRequest("expected a boolean".into())),
            },
            res::BINDING => match single(value)? {
                Value::String(b) if b == BINDING_UDP => {
                    let changed = b != self.binding;
                    self.binding = b;
                    Ok(if changed {
                        vec![Effect::Persist, Effect::RegistrationUpdate]
                    } else {
                        vec![Effect::Persist]
                    })
                }
                Value::String(_) => Err(OpError::BadRequest("only binding U is supported".into())),
                _ => Err(OpError::BadRequest("expected a string".into())),
            },
            r => Err(not_allowed(&RESOURCES, r, "resource is not writable")),
        }
    }

    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        crate::execargs::parse(args).map_err(|e| OpError::BadRequest(e.to_string()))?;
        match resource {
            res::DISABLE => Ok(vec![Effect::Disable {
                timeout_s: self.disable_timeout,
            }]),
            res::REGISTRATION_UPDATE_TRIGGER => Ok(vec![Effect::RegistrationUpdate]),
            r => Err(not_allowed(&RESOURCES, r, "resource is not executable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> ResourceValue {
        ResourceValue::Single(Value::Integer(i))
    }

    #[test]
    fn defaults_read_back() {
        let s = Server::new(1, 300);
        assert_eq!(s.read(0, res::SHORT_SERVER_ID).unwrap(), Some(int(1)));
        assert_eq!(s.read(0, res::LIFETIME).unwrap(), Some(int(300)));
        assert_eq!(s.read(0, res::DEFAULT_PMIN).unwrap(), Some(int(0)));
        assert_eq!(s.read(0, res::DEFAULT_PMAX).unwrap(), None);
        assert_eq!(s.read(0, res::DISABLE_TIMEOUT).unwrap(), Some(int(86_400)));
        assert_eq!(
            s.read(0, res::NOTIFICATION_STORING).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(true)))
        );
        assert_eq!(
            s.read(0, res::BINDING).unwrap(),
            Some(ResourceValue::Single(Value::String("U".into())))
        );
        assert!(matches!(
            s.read(0, res::DISABLE),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(s.read(0, 99), Err(OpError::NotFound));
        assert_eq!(s.read(1, 0), Err(OpError::NotFound));
    }

    #[test]
    fn writes_and_their_effects() {
        let mut s = Server::new(1, 300);
        assert_eq!(
            s.write(0, res::LIFETIME, int(3600), true).unwrap(),
            vec![Effect::Persist, Effect::RegistrationUpdate]
        );
        assert_eq!(s.lifetime, 3600);
        assert_eq!(
            s.write(0, res::LIFETIME, int(3600), true).unwrap(),
            vec![Effect::Persist]
        );
        assert!(matches!(
            s.write(0, res::LIFETIME, int(0), true),
            Err(OpError::BadRequest(_))
        ));
        assert!(matches!(
            s.write(0, res::LIFETIME, int(-5), true),
            Err(OpError::BadRequest(_))
        ));
        assert!(matches!(
            s.write(
                0,
                res::LIFETIME,
                ResourceValue::Single(Value::String("1".into())),
                true
            ),
            Err(OpError::BadRequest(_))
        ));
        assert_eq!(s.lifetime, 3600);
        s.write(0, res::DEFAULT_PMIN, int(10), true).unwrap();
        s.write(
            0,
            res::DEFAULT_PMAX,
            ResourceValue::Single(Value::Unsigned(60)),
            true,
        )
        .unwrap();
        assert_eq!((s.default_pmin, s.default_pmax), (10, Some(60)));
        s.write(
            0,
            res::NOTIFICATION_STORING,
            ResourceValue::Single(Value::Boolean(false)),
            true,
        )
        .unwrap();
        assert!(!s.notification_storing);
        assert!(matches!(
            s.write(
                0,
                res::BINDING,
                ResourceValue::Single(Value::String("T".into())),
                true
            ),
            Err(OpError::BadRequest(_))
        ));
        assert_eq!(
            s.write(
                0,
                res::BINDING,
                ResourceValue::Single(Value::String("U".into())),
                true
            )
            .unwrap(),
            vec![Effect::Persist]
        );
        assert!(matches!(
            s.write(0, res::SHORT_SERVER_ID, int(2), true),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(s.short_server_id, 1);
    }

    #[test]
    fn executes() {
        let mut s = Server::new(1, 300);
        assert_eq!(
            s.execute(0, res::REGISTRATION_UPDATE_TRIGGER, b"").unwrap(),
            vec![Effect::RegistrationUpdate]
        );
        assert_eq!(
            s.execute(0, res::DISABLE, b"").unwrap(),
            vec![Effect::Disable { timeout_s: 86_400 }]
        );
        assert!(matches!(
            s.execute(0, res::LIFETIME, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            s.execute(0, res::DISABLE, b"x y"),
            Err(OpError::BadRequest(_))
        ));
        assert_eq!(s.execute(0, 42, b""), Err(OpError::NotFound));
    }
}
