//! The admin kubeconfig: one cluster `kedge`, one user `kedge-admin`, one context `kedge`
//! (current), everything inline as base64 `*-data` so the file is self-contained.
//! Rendered as YAML through serde-saphyr; both kubectl and kube-rs read it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::PkiError;

/// Name of the cluster and of the context in written kubeconfigs.
pub const CLUSTER_NAME: &str = "kedge";

/// Which admin credential a kubeconfig carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The admin client certificate and key (`client-certificate-data`/`client-key-data`).
    ClientCert,
    /// The admin bearer token (`token`).
    Token,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a, Cluster>; 1],
    users: [Named<'a, User>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster {
    cluster: ClusterBody,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterBody {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User {
    user: UserBody,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextBody<'a>,
}

#[derive(Serialize)]
struct ContextBody<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// Inputs for one kubeconfig.
pub(super) struct Input<'a> {
    pub(super) server_url: &'a str,
    pub(super) ca_cert_pem: &'a str,
    pub(super) user: &'a str,
    pub(super) cert_and_key_pem: Option<(&'a str, &'a str)>,
    pub(super) token: Option<&'a str>,
}

/// Renders the kubeconfig YAML.
pub(super) fn render(input: &Input<'_>) -> Result<String, PkiError> {
    let url = input.server_url;
    let host_ok = url
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
    if !host_ok {
        return Err(PkiError::InvalidServerUrl {
            url: url.to_owned(),
        });
    }
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: CLUSTER_NAME,
            value: Cluster {
                cluster: ClusterBody {
                    server: url.to_owned(),
                    certificate_authority_data: b64(input.ca_cert_pem),
                },
            },
        }],
        users: [Named {
            name: input.user,
            value: User {
                user: UserBody {
                    client_certificate_data: input.cert_and_key_pem.map(|(c, _)| b64(c)),
                    client_key_data: input.cert_and_key_pem.map(|(_, k)| b64(k)),
                    token: input.token.map(str::to_owned),
                },
            },
        }],
        contexts: [Named {
            name: CLUSTER_NAME,
            value: Context {
                context: ContextBody {
                    cluster: CLUSTER_NAME,
                    user: input.user,
                },
            },
        }],
        current_context: CLUSTER_NAME,
    };
    // Plain scalars only: a folded block scalar (`>`) would append a newline to the token
    // and the base64 data.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(&config, options)
        .map_err(|source| PkiError::RenderKubeconfig { source })
}
