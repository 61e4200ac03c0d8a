//! wasmdm-package
