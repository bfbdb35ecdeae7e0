//! Printers for services and the networking kinds: endpoints, endpoint
//! slices, ingresses, ingress classes and network policies.

use serde_json::{Value, json};

use super::builtin::{AGE, NAME, Printer, col, wide};
use super::format::{age, arr, format_label_selector, format_labels, get, int, s};

fn name(o: &Value) -> Value {
    json!(s(o, &["metadata", "name"]))
}

/// `listWithMoreString`: at most `max` entries then `+ N more...`.
fn with_more(list: &[String], count: usize, max: usize, empty: &str) -> String {
    let ret = list.join(",");
    if count > max {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        empty.to_owned()
    } else {
        ret
    }
}

/// The IPs or hostnames of a load-balancer status, sorted and de-duplicated
/// (`loadBalancerStatusStringer` with wide output, as the server prints it).
fn load_balancer(status: &Value) -> String {
    let mut out: Vec<&str> = arr(status, &["loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| match (s(i, &["ip"]), s(i, &["hostname"])) {
            ("", "") => None,
            ("", h) => Some(h),
            (ip, _) => Some(ip),
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out.join(",")
}

/// Services.
pub(crate) const SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Type",
            "string",
            "type determines how the Service is exposed. Defaults to ClusterIP.",
        ),
        col(
            "Cluster-IP",
            "string",
            "clusterIP is the IP address of the service and is usually assigned randomly.",
        ),
        col(
            "External-IP",
            "string",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        col(
            "Port(s)",
            "string",
            "The list of ports that are exposed by this service.",
        ),
        AGE,
        wide(
            "Selector",
            "string",
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ],
    row: |o, now| {
        let ty = match s(o, &["spec", "type"]) {
            "" => "ClusterIP",
            t => t,
        };
        let cluster_ip = match arr(o, &["spec", "clusterIPs"])
            .first()
            .and_then(Value::as_str)
        {
            Some(ip) => ip,
            None => match s(o, &["spec", "clusterIP"]) {
                "" => "<none>",
                ip => ip,
            },
        };
        let external: Vec<&str> = arr(o, &["spec", "externalIPs"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let external_ip = match ty {
            "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_owned(),
            "ClusterIP" | "NodePort" => external.join(","),
            "LoadBalancer" => {
                let lb = load_balancer(get(o, &["status"]).unwrap_or(&Value::Null));
                let mut all: Vec<&str> = lb.split(',').filter(|x| !x.is_empty()).collect();
                all.extend(&external);
                if all.is_empty() {
                    "<pending>".to_owned()
                } else {
                    all.join(",")
                }
            }
            "ExternalName" => s(o, &["spec", "externalName"]).to_owned(),
            _ => "<unknown>".to_owned(),
        };
        let ports: Vec<String> = arr(o, &["spec", "ports"])
            .iter()
            .map(|p| {
                let proto = match s(p, &["protocol"]) {
                    "" => "TCP",
                    x => x,
                };
                match int(p, &["nodePort"]) {
                    np if np > 0 => format!("{}:{np}/{proto}", int(p, &["port"])),
                    _ => format!("{}/{proto}", int(p, &["port"])),
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(",")
        };
        vec![
            name(o),
            json!(ty),
            json!(cluster_ip),
            json!(external_ip),
            json!(ports),
            json!(age(o, now)),
            json!(format_labels(get(o, &["spec", "selector"]))),
        ]
        .into()
    },
};

/// `formatEndpoints` with all ports.
fn format_endpoints(o: &Value) -> String {
    let subsets = arr(o, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    const MAX: usize = 3;
    let (mut list, mut count) = (Vec::new(), 0usize);
    for ss in subsets {
        let addrs = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            list.extend(
                addrs
                    .iter()
                    .map(|a| s(a, &["ip"]).to_owned())
                    .take(MAX.saturating_sub(list.len())),
            );
            continue;
        }
        for port in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    break;
                }
                let ip = s(a, &["ip"]);
                let port = int(port, &["port"]);
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    // formatEndpoints prints "" (not <unset>) when nothing was listed.
    with_more(&list, count, MAX, "")
}

/// Endpoints.
pub(crate) const ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets.",
        ),
        AGE,
    ],
    row: |o, now| vec![name(o), json!(format_endpoints(o)), json!(age(o, now))].into(),
};

/// Endpoint slices.
pub(crate) const ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice.",
        ),
        AGE,
    ],
    row: |o, now| {
        const MAX: usize = 3;
        let ports_all = arr(o, &["ports"]);
        let ports: Vec<String> = ports_all
            .iter()
            .take(MAX)
            .map(|p| match get(p, &["port"]).and_then(Value::as_i64) {
                Some(n) => n.to_string(),
                None => match s(p, &["name"]) {
                    "" if get(p, &["name"]).is_none() => "*".to_owned(),
                    n => n.to_owned(),
                },
            })
            .collect();
        let addrs: Vec<String> = arr(o, &["endpoints"])
            .iter()
            .flat_map(|e| arr(e, &["addresses"]).iter().filter_map(Value::as_str))
            .map(str::to_owned)
            .collect();
        let shown: Vec<String> = addrs.iter().take(MAX).cloned().collect();
        vec![
            name(o),
            json!(s(o, &["addressType"])),
            json!(with_more(&ports, ports_all.len(), MAX, "<unset>")),
            json!(with_more(&shown, addrs.len(), MAX, "<unset>")),
            json!(age(o, now)),
        ]
        .into()
    },
};

/// Ingresses.
pub(crate) const INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Class",
            "string",
            "The name of the IngressClass resource that should be used for additional configuration",
        ),
        col(
            "Hosts",
            "string",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        col(
            "Address",
            "string",
            "Address is a list containing ingress points for the load-balancer",
        ),
        col("Ports", "string", "Ports of TLS configurations that open"),
        AGE,
    ],
    row: |o, now| {
        let rules = arr(o, &["spec", "rules"]);
        const MAX: usize = 3;
        let mut hosts = Vec::new();
        let mut more = false;
        for r in rules {
            if hosts.len() == MAX {
                more = true;
            }
            let h = s(r, &["host"]);
            if !more && !h.is_empty() {
                hosts.push(h.to_owned());
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_owned()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
        } else {
            hosts.join(",")
        };
        let ports = if arr(o, &["spec", "tls"]).is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            name(o),
            json!(match s(o, &["spec", "ingressClassName"]) {
                "" => "<none>",
                c => c,
            }),
            json!(hosts),
            json!(load_balancer(get(o, &["status"]).unwrap_or(&Value::Null))),
            json!(ports),
            json!(age(o, now)),
        ]
        .into()
    },
};

/// Ingress classes.
pub(crate) const INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    row: |o, now| {
        let params = match get(o, &["spec", "parameters"]) {
            Some(p) if p.is_object() => {
                let mut out = s(p, &["kind"]).to_owned();
                if let Some(g) = get(p, &["apiGroup"]).and_then(Value::as_str) {
                    out = format!("{out}.{g}");
                }
                format!("{out}/{}", s(p, &["name"]))
            }
            _ => "<none>".to_owned(),
        };
        vec![
            name(o),
            json!(s(o, &["spec", "controller"])),
            json!(params),
            json!(age(o, now)),
        ]
        .into()
    },
};

/// Network policies.
pub(crate) const NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Pod-Selector",
            "string",
            "Selects the pods to which this NetworkPolicy object applies.",
        ),
        AGE,
    ],
    row: |o, now| {
        // spec.podSelector is a non-pointer struct: missing means empty.
        let sel = get(o, &["spec", "podSelector"])
            .cloned()
            .unwrap_or_else(|| json!({}));
        vec![
            name(o),
            json!(format_label_selector(Some(&sel))),
            json!(age(o, now)),
        ]
        .into()
    },
};
