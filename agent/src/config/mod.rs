//! Pod configuration sources (kubelet pkg/kubelet/config): where desired pods come from.
//! Only the static pod file source exists so far; the API server source comes with cluster mode.

pub mod file;
pub mod manifest;
#[cfg(test)]
mod manifest_props;

pub use file::PodSet;
