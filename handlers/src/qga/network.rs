//! `guest-network-get-interfaces`: from `ip -json -statistics address show` (iproute2), in
//! qemu-ga's shape.

use std::time::Duration;

use guestd_core::{HandlerError, ProcessSpec};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{QgaCommand, args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const INTERFACES: QgaCommand = QgaCommand {
    name: "guest-network-get-interfaces",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        let cmd = ProcessSpec::new("ip")
            .args(["-json", "-statistics", "address", "show"])
            .observes()
            .timeout(Duration::from_secs(10));
        let out = ctx.env.runner.run(&cmd)?.check("ip")?;
        let links: Vec<Value> = serde_json::from_slice(&out.stdout)
            .map_err(|e| HandlerError::failed(format!("unreadable output of ip -json: {e}")))?;
        Ok(Value::Array(links.iter().filter_map(interface).collect()))
    },
};

/// One interface of `ip -json` output as qemu-ga reports it.
fn interface(link: &Value) -> Option<Value> {
    let mut out = Map::new();
    out.insert("name".into(), json!(link.get("ifname")?.as_str()?));
    if let Some(mac) = link.get("address").and_then(Value::as_str) {
        out.insert("hardware-address".into(), json!(mac));
    }
    let addresses: Vec<Value> = link
        .get("addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let kind = match a.get("family")?.as_str()? {
                "inet" => "ipv4",
                "inet6" => "ipv6",
                _ => return None,
            };
            Some(json!({
                "ip-address-type": kind,
                "ip-address": a.get("local")?.as_str()?,
                "prefix": a.get("prefixlen")?.as_u64()?,
            }))
        })
        .collect();
    if !addresses.is_empty() {
        out.insert("ip-addresses".into(), Value::Array(addresses));
    }
    if let Some(stats) = link.get("stats64") {
        let get = |dir: &str, key: &str| {
            stats
                .get(dir)
                .and_then(|d| d.get(key))
                .and_then(Value::as_u64)
        };
        let mut s = Map::new();
        for dir in ["rx", "tx"] {
            for (key, name) in [
                ("bytes", "bytes"),
                ("packets", "packets"),
                ("errors", "errs"),
                ("dropped", "dropped"),
            ] {
                if let Some(v) = get(dir, key) {
                    s.insert(format!("{dir}-{name}"), json!(v));
                }
            }
        }
        out.insert("statistics".into(), Value::Object(s));
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ip_json() {
        let link = json!({"ifname":"eth0","address":"52:54:00:12:34:56",
            "addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24},
                         {"family":"inet6","local":"fd00::2","prefixlen":64}],
            "stats64":{"rx":{"bytes":1,"packets":2,"errors":3,"dropped":4},
                       "tx":{"bytes":5,"packets":6,"errors":7,"dropped":8}}});
        assert_eq!(
            interface(&link).unwrap(),
            json!({"name":"eth0","hardware-address":"52:54:00:12:34:56",
                "ip-addresses":[{"ip-address-type":"ipv4","ip-address":"192.0.2.2","prefix":24},
                                {"ip-address-type":"ipv6","ip-address":"fd00::2","prefix":64}],
                "statistics":{"rx-bytes":1,"rx-packets":2,"rx-errs":3,"rx-dropped":4,
                              "tx-bytes":5,"tx-packets":6,"tx-errs":7,"tx-dropped":8}})
        );
    }
}
