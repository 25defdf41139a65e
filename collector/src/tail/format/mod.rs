//! Log file formats.

pub mod cri;
pub mod docker_json;
