//! Safe Lustre layer over `lustre-sys` (issue 3 fills this in).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LustreConfig {}

impl LustreConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
