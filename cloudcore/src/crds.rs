//! kedge's CustomResourceDefinitions, compiled in from `deploy/crds/` so `standalone`
//! installs exactly what the Helm chart ships.

use serde_json::Value;

/// The CRD manifests (YAML), by file name.
pub const MANIFESTS: &[(&str, &str)] = &[
    (
        "devices.kubeedge.io_devices.yaml",
        include_str!("../../deploy/crds/devices.kubeedge.io_devices.yaml"),
    ),
    (
        "devices.kubeedge.io_devicemodels.yaml",
        include_str!("../../deploy/crds/devices.kubeedge.io_devicemodels.yaml"),
    ),
];

/// Parse every manifest into JSON objects.
pub fn objects() -> Result<Vec<Value>, String> {
    MANIFESTS
        .iter()
        .map(|(name, text)| {
            serde_saphyr::from_str::<Value>(text).map_err(|e| format!("{name}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifests_parse_as_crds() {
        let objs = super::objects().unwrap_or_default();
        assert_eq!(objs.len(), super::MANIFESTS.len());
        for o in objs {
            assert_eq!(o["kind"], "CustomResourceDefinition");
            assert_eq!(o["spec"]["group"], "devices.kubeedge.io");
        }
    }
}
