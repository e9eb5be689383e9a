//! Stats export: memcached counters and Graphite (issue 5 fills this in).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {}

impl StatsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}
