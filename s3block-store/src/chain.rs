//! Temporary credentials from the AWS credential providers `object_store`
//! offers, for an S3 store that has no access key.
//!
//! When [`StoreConfig`](crate::StoreConfig) finds no key (environment,
//! options, access file), the environment may name a provider, tried in
//! this order, as `object_store` tries them:
//!
//! | provider | environment |
//! |---|---|
//! | web identity (EKS service accounts, OIDC) | `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (`AWS_ROLE_SESSION_NAME`, `AWS_ENDPOINT_URL_STS`) |
//! | ECS task role | `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` |
//! | EKS Pod Identity | `AWS_CONTAINER_CREDENTIALS_FULL_URI` and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` |
//! | EC2 instance metadata (the instance's role) | only when asked ([`InstanceCredentials`]); `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves the endpoint |
//!
//! The instance metadata service is asked for a session token first
//! (IMDSv2); IMDSv1 is used when the service refuses tokens, unless
//! [`InstanceCredentials::imdsv2_only`]. It is used only when asked, as
//! s3backer does: elsewhere the service is absent and asking it costs a
//! timeout, and a store without credentials is read anonymously.
//! AWS profile files (`~/.aws/credentials`, `AWS_PROFILE`) are not read:
//! `object_store` has no provider for them.

use object_store::aws::AmazonS3Builder;

/// The environment variables handed to `object_store`'s providers, each
/// with the configuration key it sets.
const PROVIDER_ENV: &[(&str, &str)] = &[
    ("AWS_WEB_IDENTITY_TOKEN_FILE", "aws_web_identity_token_file"),
    ("AWS_ROLE_ARN", "aws_role_arn"),
    ("AWS_ROLE_SESSION_NAME", "aws_role_session_name"),
    ("AWS_ENDPOINT_URL_STS", "aws_endpoint_url_sts"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "aws_container_credentials_relative_uri"),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "aws_container_credentials_full_uri"),
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "aws_container_authorization_token_file"),
];

/// The variable that moves the instance metadata endpoint (as in the AWS SDKs).
pub const METADATA_ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";

/// Credentials of the EC2 instance's role, from the instance metadata service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceCredentials {
    /// The role named by the user (s3backer's `--accessEC2IAM=ROLE`), for
    /// messages: the service gives the credentials of the instance's role.
    pub role: Option<String>,
    /// Never fall back to IMDSv1.
    pub imdsv2_only: bool,
}

/// Which provider signs the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Provider {
    WebIdentity { role_arn: String },
    EcsTask,
    EksPodIdentity,
    Instance(InstanceCredentials),
}

/// The provider the environment (read with `var`) names, else the
/// instance's role when `instance` asks for it; with the configuration
/// that goes to `object_store`.
pub(crate) fn find(
    var: impl Fn(&str) -> Option<String>,
    instance: Option<&InstanceCredentials>,
) -> Option<(Provider, Vec<(&'static str, String)>)> {
    let config: Vec<(&'static str, String)> =
        PROVIDER_ENV.iter().filter_map(|(name, key)| Some((*key, var(name)?))).collect();
    let has = |key: &str| config.iter().any(|(k, _)| *k == key);
    let provider = if let (true, Some(role_arn)) = (has("aws_web_identity_token_file"), var("AWS_ROLE_ARN")) {
        Provider::WebIdentity { role_arn }
    } else if has("aws_container_credentials_relative_uri") {
        Provider::EcsTask
    } else if has("aws_container_credentials_full_uri") && has("aws_container_authorization_token_file") {
        Provider::EksPodIdentity
    } else {
        let instance = instance?.clone();
        let mut config = Vec::new();
        if let Some(endpoint) = var(METADATA_ENDPOINT_ENV) {
            config.push(("aws_metadata_endpoint", endpoint.trim_end_matches('/').to_owned()));
        }
        config.push(("aws_imdsv1_fallback", (!instance.imdsv2_only).to_string()));
        return Some((Provider::Instance(instance), config));
    };
    Some((provider, config))
}

/// `builder` with the provider's configuration.
pub(crate) fn apply(builder: AmazonS3Builder, config: &[(&'static str, String)]) -> AmazonS3Builder {
    config.iter().fold(builder, |b, (key, value)| match key.parse() {
        Ok(key) => b.with_config(key, value),
        // Every key above is one of object_store's; a test checks it.
        Err(_) => b,
    })
}

impl Provider {
    /// What signs the requests, in words for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Provider::WebIdentity { role_arn } => {
                format!("web identity credentials (AWS_WEB_IDENTITY_TOKEN_FILE, role {role_arn})")
            }
            Provider::EcsTask => "the ECS task role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)".to_owned(),
            Provider::EksPodIdentity => "EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI)".to_owned(),
            Provider::Instance(i) => format!(
                "the EC2 instance's role{} from the instance metadata service ({})",
                i.role.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
                if i.imdsv2_only { "IMDSv2" } else { "IMDSv2, else IMDSv1" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_environment_names_the_provider_in_object_stores_order() {
        let web = lookup(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds"),
        ]);
        let (provider, config) = find(web, None).expect("web identity");
        assert_eq!(provider, Provider::WebIdentity { role_arn: "arn:aws:iam::1:role/r".into() });
        assert!(config.contains(&("aws_web_identity_token_file", "/var/run/token".into())));
        let (provider, _) =
            find(lookup(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/c")]), None).expect("ecs");
        assert_eq!(provider, Provider::EcsTask);
        let eks = lookup(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/eks"),
        ]);
        assert_eq!(find(eks, None).expect("eks").0, Provider::EksPodIdentity);
        // Without a provider in the environment: the instance role only when asked.
        assert_eq!(find(lookup(&[]), None), None);
        let asked = InstanceCredentials { role: Some("r".into()), imdsv2_only: true };
        let (provider, config) =
            find(lookup(&[(METADATA_ENDPOINT_ENV, "http://127.0.0.1:9/")]), Some(&asked)).expect("instance");
        assert_eq!(provider, Provider::Instance(asked));
        assert_eq!(
            config,
            vec![
                ("aws_metadata_endpoint", "http://127.0.0.1:9".into()),
                ("aws_imdsv1_fallback", "false".into())
            ]
        );
        assert!(provider.describe().contains("role r") && provider.describe().contains("IMDSv2)"));
    }

    #[test]
    fn every_key_is_one_of_object_stores() {
        let keys =
            PROVIDER_ENV.iter().map(|(_, k)| *k).chain(["aws_metadata_endpoint", "aws_imdsv1_fallback"]);
        for key in keys {
            assert!(key.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(), "{key}");
        }
    }
}
