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
    pub const BOOTSTRAP_REQUEST_TRIGGER: u16 = 9;
    pub const BOOTSTRAP_ON_REGISTRATION_FAILURE: u16 = 16;
    pub const COMMUNICATION_RETRY_COUNT: u16 = 17;
    pub const COMMUNICATION_RETRY_TIMER: u16 = 18;
    pub const COMMUNICATION_SEQUENCE_DELAY_TIMER: u16 = 19;
    pub const COMMUNICATION_SEQUENCE_RETRY_COUNT: u16 = 20;
    pub const MUTE_SEND: u16 = 23;
}

static RESOURCES: [ResourceDef; 11] = [
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
    def(
        res::BOOTSTRAP_REQUEST_TRIGGER,
        "Bootstrap-Request Trigger",
        Operations::Execute,
        false,
        false,
        DataType::None,
    ),
    def(
        res::MUTE_SEND,
        "Mute Send",
        Operations::ReadWrite,
        false,
        false,
        DataType::Boolean,
    ),
];

/// The one binding we speak: UDP.
pub const BINDING_UDP: &str = "U";

/// One Server instance for the one LwM2M server (instance id 0 unless
/// bootstrap provisioned another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The instance id (/1/x); bootstrap may choose any.
    #[serde(default)]
    pub instance: u16,
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
    /// /1/x/16 Bootstrap on Registration Failure (default true, Core 1.1 §E.2).
    #[serde(default = "yes")]
    pub bootstrap_on_failure: bool,
    /// /1/x/17-20 Communication Retry Count, Retry Timer (s), Sequence
    /// Delay Timer (s), Sequence Retry Count (Core 1.1 §6.2.1.1); `None`:
    /// the defaults of [`Server::retry_policy`]. Written by bootstrap only.
    #[serde(default)]
    pub retry_count: Option<u64>,
    #[serde(default)]
    pub retry_timer: Option<u64>,
    #[serde(default)]
    pub sequence_delay: Option<u64>,
    #[serde(default)]
    pub sequence_retry_count: Option<u64>,
    /// /1/x/23 Mute Send: when true the client sends no LwM2M 1.1 Send
    /// (Core 1.1 §6.4 Send, §E.2). Ours starts false: apps may Send until the
    /// server mutes them.
    #[serde(default)]
    pub mute_send: bool,
}

fn yes() -> bool {
    true
}

/// The Register retry policy of Core 1.1 §6.2.1.1, from /1/x/17-20 or
/// their defaults (Wakaama's, reference §1: 5 tries, 60 s doubling, a
/// sequence delay of 86400 s, 1 sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Register attempts per sequence.
    pub retry_count: u32,
    /// First back-off (s), doubled per attempt.
    pub retry_timer: u64,
    /// Pause between sequences (s).
    pub sequence_delay: u64,
    /// Sequences before the registration counts as failed.
    pub sequence_retry_count: u32,
}

impl RetryPolicy {
    /// Failed Register attempts after which the registration has failed
    /// (and a client with a bootstrap account bootstraps again when /1/x/16 says so).
    pub fn attempts_until_failure(&self) -> u32 {
        self.retry_count
            .max(1)
            .saturating_mul(self.sequence_retry_count.max(1))
    }
}

impl Server {
    /// Defaults of Core 1.1 §E.2: pmin 0, no pmax, Disable Timeout 86400 s,
    /// notification storing on, binding U.
    pub fn new(short_server_id: u16, lifetime: u64) -> Self {
        Server {
            instance: 0,
            short_server_id,
            lifetime,
            default_pmin: 0,
            default_pmax: None,
            disable_timeout: 86_400,
            notification_storing: true,
            binding: BINDING_UDP.to_owned(),
            bootstrap_on_failure: true,
            retry_count: None,
            retry_timer: None,
            sequence_delay: None,
            sequence_retry_count: None,
            mute_send: false,
        }
    }

    /// /1/x/17-20 with their defaults filled in.
    pub fn retry_policy(&self) -> RetryPolicy {
        let small = |v: Option<u64>, d: u32| v.map_or(d, |v| u32::try_from(v).unwrap_or(u32::MAX));
        RetryPolicy {
            retry_count: small(self.retry_count, 5),
            retry_timer: self.retry_timer.unwrap_or(60),
            sequence_delay: self.sequence_delay.unwrap_or(86_400),
            sequence_retry_count: small(self.sequence_retry_count, 1),
        }
    }
}

impl Object for Server {
    /// Exact: the writes run on a copy (LwM2M 1.1 Core §6.3.9 all-or-nothing).
    fn check_writes(&self, writes: &[crate::object::PlannedWrite]) -> Result<(), OpError> {
        crate::object::dry_run(self, writes)
    }
    fn id(&self) -> u16 {
        OBJECT_ID
    }
    fn resources(&self) -> &[ResourceDef] {
        &RESOURCES
    }
    fn instances(&self) -> Vec<u16> {
        vec![self.instance]
    }

    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        if instance != self.instance {
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
            res::MUTE_SEND => Ok(Some(ResourceValue::Single(Value::Boolean(self.mute_send)))),
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
        if instance != self.instance {
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
            res::MUTE_SEND => match single(value)? {
                Value::Boolean(b) => {
                    self.mute_send = b;
                    Ok(vec![Effect::Persist])
                }
                _ => Err(OpError::BadRequest("expected a boolean".into())),
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
        if instance != self.instance {
            return Err(OpError::NotFound);
        }
        crate::execargs::parse(args).map_err(|e| OpError::BadRequest(e.to_string()))?;
        match resource {
            res::DISABLE => Ok(vec![Effect::Disable {
                timeout_s: self.disable_timeout,
            }]),
            res::REGISTRATION_UPDATE_TRIGGER => Ok(vec![Effect::RegistrationUpdate]),
            // Core 1.1 §E.2: the client initiates a Bootstrap-Request.
            res::BOOTSTRAP_REQUEST_TRIGGER => Ok(vec![Effect::BootstrapRequest]),
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
        assert_eq!(
            s.execute(0, res::BOOTSTRAP_REQUEST_TRIGGER, b"").unwrap(),
            vec![Effect::BootstrapRequest]
        );
    }

    #[test]
    fn a_provisioned_instance_id_and_the_retry_policy() {
        let mut s = Server::new(101, 300);
        s.instance = 3;
        assert_eq!(s.instances(), vec![3]);
        assert_eq!(s.read(0, res::LIFETIME), Err(OpError::NotFound));
        assert_eq!(s.read(3, res::LIFETIME).unwrap(), Some(int(300)));
        let p = s.retry_policy();
        assert_eq!((p.retry_count, p.retry_timer), (5, 60));
        assert_eq!((p.sequence_delay, p.sequence_retry_count), (86_400, 1));
        assert_eq!(p.attempts_until_failure(), 5);
        s.retry_count = Some(2);
        s.sequence_retry_count = Some(3);
        assert_eq!(s.retry_policy().attempts_until_failure(), 6);
        // Older snapshots without the new fields still load, with defaults.
        let old = r#"{"short_server_id":1,"lifetime":60,"default_pmin":0,"default_pmax":null,"disable_timeout":86400,"notification_storing":true,"binding":"U"}"#;
        let s: Server = serde_json::from_str(old).unwrap();
        assert!(s.bootstrap_on_failure);
        assert_eq!(s.instance, 0);
    }
}
