//! CoRE link format.
