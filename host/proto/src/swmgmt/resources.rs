//! The resources of Object 9 this client implements (SwMgmt §6).

use crate::model::DataType;
use crate::object::{Operations, ResourceDef};
use crate::objects::def;

use super::res;

/// Longest value of the 0-255 byte String resources (PkgName, Package URI, User Name, Password).
pub(super) const MAX_STRING: usize = 255;

/// Object 9 resources we implement. 5 (Checkpoint) and 13 (Package Settings)
/// link to objects nobody defines and are absent.
pub(super) static RESOURCES: [ResourceDef; 17] = [
    def(
        res::PKG_NAME,
        "PkgName",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::PKG_VERSION,
        "PkgVersion",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::PACKAGE,
        "Package",
        Operations::Write,
        false,
        false,
        DataType::Opaque,
    ),
    def(
        res::PACKAGE_URI,
        "Package URI",
        Operations::Write,
        false,
        false,
        DataType::String,
    ),
    def(
        res::INSTALL,
        "Install",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
    def(
        res::UNINSTALL,
        "Uninstall",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
    def(
        res::UPDATE_STATE,
        "Update State",
        Operations::Read,
        false,
        true,
        DataType::Integer,
    ),
    def(
        res::UPDATE_SUPPORTED_OBJECTS,
        "Update Supported Objects",
        Operations::ReadWrite,
        false,
        false,
        DataType::Boolean,
    ),
    def(
        res::UPDATE_RESULT,
        "Update Result",
        Operations::Read,
        false,
        true,
        DataType::Integer,
    ),
    def(
        res::ACTIVATE,
        "Activate",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
    def(
        res::DEACTIVATE,
        "Deactivate",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
    def(
        res::ACTIVATION_STATE,
        "Activation State",
        Operations::Read,
        false,
        true,
        DataType::Boolean,
    ),
    def(
        res::USER_NAME,
        "User Name",
        Operations::Write,
        false,
        false,
        DataType::String,
    ),
    def(
        res::PASSWORD,
        "Password",
        Operations::Write,
        false,
        false,
        DataType::String,
    ),
    def(
        res::STATUS_REASON,
        "Status Reason",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    ResourceDef {
        id: res::COMPONENT_LINK,
        name: "Software Component Link",
        operations: Operations::Read,
        multiple: true,
        mandatory: false,
        data_type: DataType::ObjLink,
    },
    def(
        res::COMPONENT_TREE_LENGTH,
        "Software Component tree length",
        Operations::Read,
        false,
        false,
        DataType::Integer,
    ),
];
