//! Removes expired blocks from the maps. The XDP program already ignores an
//! expired entry; the sweeper frees its slot and logs that access came back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::XdpMaps;
use crate::clock;

/// Sweeps every `interval` until the task is dropped.
pub async fn run(maps: Arc<Mutex<XdpMaps>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let swept = {
            let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
            maps.sweep_expired(clock::monotonic_ns())
        };
        match swept {
            Ok(expired) => {
                for (net, entry) in expired {
                    tracing::info!(
                        source = %net,
                        reason = %String::from_utf8_lossy(entry.reason_bytes()),
                        "block expired; source may send again"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired blocks failed"),
        }
    }
}
