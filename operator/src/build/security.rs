//! Token keys and TLS certificates: Secrets mounted into the gateway pods and
//! pointed at by `PUSHGATE_*` variables. Only Secret names and file paths
//! appear in the pod spec; no key material ever reaches the ConfigMap, the
//! operator's logs or its memory (it never reads these Secrets).

use crate::crd::PushGatewaySpec;
use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use pushgate_contract::config::{CertIdentity, ClientAuth};
use pushgate_contract::names::env as vars;

/// Where the token verifying key is mounted.
pub const AUTH_DIR: &str = "/var/run/secrets/pushgate/auth";
/// Where the TLS pair is mounted; the gateway polls it, so Secret updates rotate in place.
pub const TLS_DIR: &str = "/var/run/secrets/pushgate/tls";
/// Where the client CA bundle is mounted (polled like the TLS pair).
pub const CLIENT_CA_DIR: &str = "/var/run/secrets/pushgate/client-ca";
/// Where the peer token of the canary tracks is mounted.
pub const PEER_DIR: &str = "/var/run/secrets/pushgate/peer";
/// Owner and group read only (the pod's fsGroup owns the files).
const SECRET_MODE: i32 = 0o440;

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// A Secret volume with `items` (key → file name), or every key of the Secret when empty.
pub(super) fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: (!items.is_empty()).then(|| {
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect()
            }),
            default_mode: Some(SECRET_MODE),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

pub(super) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Environment of the gateway container for `spec.auth` and `spec.tls`.
pub fn env(spec: &PushGatewaySpec) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(auth) = &spec.auth {
        if auth.key_secret_ref.is_some() {
            env.push(var(vars::AUTH_KEY_FILE, format!("{AUTH_DIR}/key")));
        }
        if auth.keys_secret_ref.is_some() {
            env.push(var(vars::AUTH_KEY_DIR, AUTH_DIR.into()));
        }
        env.push(var(
            vars::AUTH_ALGORITHM,
            pushgate_contract::config::KeyAlgorithm::from(auth.algorithm.unwrap_or_default())
                .as_str()
                .into(),
        ));
        for (name, list) in [
            (vars::AUTH_ANONYMOUS_SUBSCRIBE, &auth.anonymous_subscribe),
            (vars::AUTH_ANONYMOUS_PUBLISH, &auth.anonymous_publish),
        ] {
            // Topic patterns cannot contain commas, so the list joins losslessly.
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                env.push(var(name, list.join(",")));
            }
        }
    }
    if let Some(tls) = &spec.tls {
        env.push(var(vars::TLS_CERT_FILE, format!("{TLS_DIR}/tls.crt")));
        env.push(var(vars::TLS_KEY_FILE, format!("{TLS_DIR}/tls.key")));
        if let Some(ca) = &tls.client_ca {
            env.push(var(
                vars::TLS_CLIENT_CA_FILE,
                format!("{CLIENT_CA_DIR}/ca.crt"),
            ));
            let mode = ClientAuth::from(ca.mode.unwrap_or_default());
            env.push(var(vars::TLS_CLIENT_AUTH, mode.as_str().into()));
            let identity = CertIdentity::from(ca.identity.unwrap_or_default());
            env.push(var(
                vars::AUTH_CERTIFICATE_IDENTITY,
                identity.as_str().into(),
            ));
        }
    }
    env
}

/// Secret volumes for `spec.auth` and `spec.tls`.
pub fn volumes(spec: &PushGatewaySpec) -> Vec<Volume> {
    let mut v = Vec::new();
    if let Some(auth) = &spec.auth {
        if let Some(r) = &auth.key_secret_ref {
            let key = r.key.as_deref().unwrap_or("key");
            v.push(secret_volume("auth-key", &r.name, &[(key, "key")]));
        }
        if let Some(r) = &auth.keys_secret_ref {
            // Every key of the Secret is a file named by its kid.
            v.push(secret_volume("auth-key", &r.name, &[]));
        }
    }
    if let Some(tls) = &spec.tls {
        v.push(secret_volume(
            "tls",
            &tls.secret_name,
            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ));
        if let Some(ca) = &tls.client_ca {
            let key = ca.key.as_deref().unwrap_or("ca.crt");
            v.push(secret_volume(
                "client-ca",
                &ca.secret_name,
                &[(key, "ca.crt")],
            ));
        }
    }
    v
}

/// Read-only mounts of those volumes.
pub fn mounts(spec: &PushGatewaySpec) -> Vec<VolumeMount> {
    let mut m = Vec::new();
    if spec
        .auth
        .as_ref()
        .is_some_and(|a| a.key_secret_ref.is_some() || a.keys_secret_ref.is_some())
    {
        m.push(mount("auth-key", AUTH_DIR));
    }
    if let Some(tls) = &spec.tls {
        m.push(mount("tls", TLS_DIR));
        if tls.client_ca.is_some() {
            m.push(mount("client-ca", CLIENT_CA_DIR));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::desired;
    use super::super::testutil::*;
    use super::*;

    /// The Secret source of volume `name`.
    fn secret_source(vols: &[Volume], name: &str) -> SecretVolumeSource {
        vols.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.secret.clone())
            .unwrap()
    }

    fn spec(json: serde_json::Value) -> PushGatewaySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn nothing_is_added_without_auth_or_tls() {
        let s = PushGatewaySpec::default();
        assert!(env(&s).is_empty() && volumes(&s).is_empty() && mounts(&s).is_empty());
    }

    #[test]
    fn secrets_are_mounted_and_referenced_by_path_only() {
        let s = spec(serde_json::json!({
            "auth": {
                "keySecretRef": {"name": "jwt", "key": "es256.pub"},
                "algorithm": "es256",
                "anonymousSubscribe": ["public/**", "status"]
            },
            "tls": {"secretName": "gw-cert"}
        }));
        let d = desired(&pgw(s)).unwrap();
        let pod = d.deployment.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let env: Vec<(String, String)> = c
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("PUSHGATE_AUTH_KEY_FILE"),
            Some("/var/run/secrets/pushgate/auth/key")
        );
        assert_eq!(get("PUSHGATE_AUTH_ALGORITHM"), Some("es256"));
        assert_eq!(
            get("PUSHGATE_AUTH_ANONYMOUS_SUBSCRIBE"),
            Some("public/**,status")
        );
        assert_eq!(get("PUSHGATE_AUTH_ANONYMOUS_PUBLISH"), None);
        assert_eq!(
            get("PUSHGATE_TLS_CERT_FILE"),
            Some("/var/run/secrets/pushgate/tls/tls.crt")
        );
        assert_eq!(
            get("PUSHGATE_TLS_KEY_FILE"),
            Some("/var/run/secrets/pushgate/tls/tls.key")
        );

        let vols = pod.volumes.unwrap();
        let secret = |n: &str| secret_source(&vols, n);
        let auth = secret("auth-key");
        assert_eq!(auth.secret_name.as_deref(), Some("jwt"));
        assert_eq!(auth.items.unwrap()[0].key, "es256.pub");
        assert_eq!(auth.default_mode, Some(0o440));
        assert_eq!(secret("tls").secret_name.as_deref(), Some("gw-cert"));
        let mounts = c.volume_mounts.clone().unwrap();
        for (name, path) in [("auth-key", AUTH_DIR), ("tls", TLS_DIR)] {
            let m = mounts.iter().find(|m| m.name == name).unwrap();
            assert_eq!(m.mount_path, path);
            assert_eq!(m.read_only, Some(true));
        }
        // The ConfigMap names neither Secret nor any key path.
        let cm = serde_json::to_string(&d.config_map.data).unwrap();
        assert!(
            !cm.contains("jwt") && !cm.contains("gw-cert") && !cm.contains("secrets"),
            "{cm}"
        );
    }

    #[test]
    fn default_key_and_algorithm() {
        let s = spec(serde_json::json!({"auth": {"keySecretRef": {"name": "jwt"}}}));
        assert_eq!(
            volumes(&s)[0]
                .secret
                .as_ref()
                .unwrap()
                .items
                .as_ref()
                .unwrap()[0]
                .key,
            "key"
        );
        assert!(env(&s)
            .iter()
            .any(|e| e.name == "PUSHGATE_AUTH_ALGORITHM" && e.value.as_deref() == Some("hs256")));
    }

    #[test]
    fn a_key_set_and_client_certificates_are_mounted_whole_and_by_path() {
        let s = spec(serde_json::json!({
            "auth": {
                "keysSecretRef": {"name": "jwt-keys"},
                "certificateGrants": [{"identity": "sensor-*", "subscribe": ["devices/{identity}/**"]}]
            },
            "tls": {"secretName": "gw-cert", "clientCA": {"secretName": "device-ca", "mode": "optional", "identity": "uri"}}
        }));
        let env: Vec<(String, String)> = env(&s)
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("PUSHGATE_AUTH_KEY_DIR"), Some(AUTH_DIR));
        assert_eq!(get("PUSHGATE_AUTH_KEY_FILE"), None);
        assert_eq!(
            get("PUSHGATE_TLS_CLIENT_CA_FILE"),
            Some("/var/run/secrets/pushgate/client-ca/ca.crt")
        );
        assert_eq!(get("PUSHGATE_TLS_CLIENT_AUTH"), Some("optional"));
        assert_eq!(get("PUSHGATE_AUTH_CERTIFICATE_IDENTITY"), Some("uri"));
        let vols = volumes(&s);
        let secret = |n: &str| secret_source(&vols, n);
        let keys = secret("auth-key");
        assert_eq!(keys.secret_name.as_deref(), Some("jwt-keys"));
        assert_eq!(
            keys.items, None,
            "every key of the Secret, each named by its kid"
        );
        let ca = secret("client-ca");
        assert_eq!(ca.secret_name.as_deref(), Some("device-ca"));
        assert_eq!(ca.items.unwrap()[0].key, "ca.crt");
        let mounted: Vec<String> = mounts(&s).into_iter().map(|m| m.mount_path).collect();
        assert_eq!(mounted, [AUTH_DIR, TLS_DIR, CLIENT_CA_DIR]);
        // The grants are policy, not secrets: they go to the ConfigMap.
        let yaml = crate::config::render(&s).unwrap();
        assert!(
            yaml.contains("certificate_grants") && yaml.contains("devices/{identity}/**"),
            "{yaml}"
        );
    }

    #[test]
    fn certificate_only_auth_mounts_no_key() {
        let s = spec(serde_json::json!({
            "auth": {"certificateGrants": [{"identity": "*", "subscribe": ["public"]}]},
            "tls": {"secretName": "gw-cert", "clientCA": {"secretName": "device-ca"}}
        }));
        assert!(volumes(&s).iter().all(|v| v.name != "auth-key"));
        assert!(env(&s)
            .iter()
            .all(|e| e.name != "PUSHGATE_AUTH_KEY_FILE" && e.name != "PUSHGATE_AUTH_KEY_DIR"));
        assert!(env(&s).iter().any(
            |e| e.name == "PUSHGATE_TLS_CLIENT_AUTH" && e.value.as_deref() == Some("required")
        ));
    }
}
