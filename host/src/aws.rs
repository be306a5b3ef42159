//! Talking to AWS the way every AWS tool does, for every service the host
//! uses (Kinesis, DynamoDB): the default credential chain, profiles,
//! regions, any compatible endpoint; and one line for an SDK error.

use anyhow::bail;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use std::time::Duration;

// The SDK crates re-export one smithy runtime: these types serve DynamoDB's
// errors as well as Kinesis'.
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Where and as whom to connect; unset fields fall back to the usual AWS
/// environment variables and config files.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Region, e.g. `eu-west-1` (else `AWS_REGION` / the profile's region).
    pub region: Option<String>,
    /// Named profile from `~/.aws/config` (else `AWS_PROFILE`).
    pub profile: Option<String>,
    /// A Kinesis-compatible endpoint such as `http://localhost:4567`
    /// (else `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
}

/// The SDK configuration every client is built from, checking up front what would otherwise fail later and vaguely:
/// a region must be known, and credentials must resolve (a local endpoint
/// accepts any, so there we fall back to placeholder ones, like the seeds' `''`).
pub async fn sdk_config(options: &AwsOptions) -> anyhow::Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(20))
            .build(),
    );
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let local = options.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if local {
        // A local endpoint takes any credentials and region: do not probe the
        // EC2 metadata service for them (slow, and noisy off AWS).
        if options.region.is_none() && !env_set("AWS_REGION") && !env_set("AWS_DEFAULT_REGION") {
            loader = loader.region(Region::new("us-east-1"));
        }
        if options.profile.is_none() && !env_set("AWS_PROFILE") && !env_set("AWS_ACCESS_KEY_ID") {
            loader = loader.credentials_provider(Credentials::new("local", "local", None, None, "host-local"));
        }
    }
    let config = loader.load().await;
    let mut builder = config.to_builder();
    if config.region().is_none() {
        if !local {
            bail!("no AWS region configured: pass --region, set AWS_REGION, or give the profile a region");
        }
        builder.set_region(Some(Region::new("us-east-1")));
    }
    let credentials = match config.credentials_provider() {
        Some(provider) => provider.provide_credentials().await.map_err(|e| e.to_string()),
        None => Err("no credential provider".to_string()),
    };
    if let Err(reason) = credentials {
        if !local {
            bail!(
                "no AWS credentials found ({reason}): run `aws configure`, pass --profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            );
        }
        tracing::debug!("no credentials for the local endpoint; using placeholders");
        let local = Credentials::new("local", "local", None, None, "host-local");
        builder.set_credentials_provider(Some(SharedCredentialsProvider::new(local)));
    }
    Ok(builder.build())
}

/// One line for an SDK error: the service's code and message when there is
/// one, else the transport cause (e.g. connection refused) and what to
/// check. `service` names the endpoint in the transport case ("Kinesis", "DynamoDB").
pub fn describe<E, R>(error: &SdkError<E, R>, service: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => {
            let err = e.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => DisplayErrorContext(error).to_string(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            let full = DisplayErrorContext(error).to_string().to_lowercase();
            let why = if full.contains("connection refused") {
                "connection refused"
            } else if matches!(error, SdkError::TimeoutError(_))
                || full.contains("timed out")
                || full.contains("timeout")
            {
                "timed out"
            } else if full.contains("dns") || full.contains("resolve") {
                "host name not found"
            } else {
                "network error"
            };
            format!("cannot reach the {service} endpoint ({why}); check --endpoint-url/--region, the network, or that the endpoint is running")
        }
        _ => DisplayErrorContext(error).to_string(),
    }
}
