//! Writes the `[xdp]` section of a config into the maps: settings, protected
//! ports, and the static allow and block lists. Entries that operators or
//! escalation added at runtime are left alone; static entries that left the
//! config are removed (found through the maps handle's index of config
//! blocks, so a reload never walks a large blocklist under the maps' lock).
//! Used at start and on reload.

use gateway_common::{
    acl::{BlockEntry, BlockSource},
    config::{FLAG_RATE_LIMIT, Limit, XdpConfig},
};

use super::config::XdpSection;
use super::{
    XdpMaps,
    maps::{ALLOW_FROM_CONFIG, MapsError},
};
use crate::clock;

/// Writes `[xdp]` into the maps: the settings and protected ports, then the config's allow and
/// block lists, removing config entries the section no longer lists. Operator and escalation
/// entries are left alone. Errors are map writes the kernel refused.
pub fn apply(maps: &mut XdpMaps, section: &XdpSection) -> Result<(), MapsError> {
    let rl = &section.rate_limit;
    maps.set_config(XdpConfig {
        pps: Limit {
            rate: rl.pps.rate,
            burst: rl.pps.burst,
        },
        syn: Limit {
            rate: rl.syn.rate,
            burst: rl.syn.burst,
        },
        v6_prefix_len: u32::from(section.ipv6_prefix_len.get()),
        flags: if rl.enabled { FLAG_RATE_LIMIT } else { 0 },
        // Both computed by set_config from what the maps hold.
        present: 0,
        block_prefix_lens: Default::default(),
    })?;
    let ports: Vec<u16> = section.protected_ports.iter().map(|p| p.get()).collect();
    maps.set_ports(&ports)?;

    for (net, origin) in maps.allow_list()? {
        if origin == ALLOW_FROM_CONFIG && !section.allow.contains(&net) {
            maps.allow_del(&net)?;
        }
    }
    for net in &section.allow {
        maps.allow_add(net, ALLOW_FROM_CONFIG)?;
    }

    // From the handle's index of config blocks, never a walk of the
    // blocklist: a reload holds the maps' lock here, and escalation on the
    // request path waits for it.
    for net in maps.config_blocks() {
        if !section.block.contains(&net) {
            maps.block_del(&net)?;
        }
    }
    for net in &section.block {
        maps.block_add(
            net,
            BlockEntry {
                expires_ns: 0,
                created_unix: clock::unix_now(),
                source: BlockSource::Config as u32,
                offences: 1,
                reason: gateway_common::acl::encode_reason("config"),
            },
        )?;
    }
    Ok(())
}
