//! wasmdm-proto
