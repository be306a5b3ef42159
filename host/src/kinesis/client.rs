//! Building a Kinesis client the way every AWS tool does: the default
//! credential chain, profiles, regions, and any Kinesis-compatible endpoint.

pub use crate::aws::AwsOptions;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::Client;

/// Connects to Kinesis (see [`crate::aws::sdk_config`]).
pub async fn connect(options: &AwsOptions) -> anyhow::Result<Client> {
    Ok(Client::new(&crate::aws::sdk_config(options).await?))
}

/// One line for a Kinesis SDK error (see [`crate::aws::describe`]).
pub fn describe_error<E>(error: &aws_sdk_kinesis::error::SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    crate::aws::describe(error, "Kinesis")
}

/// Error code of a service error, if it is one.
pub fn error_code<E: ProvideErrorMetadata>(error: &aws_sdk_kinesis::error::SdkError<E>) -> Option<&str> {
    match error {
        aws_sdk_kinesis::error::SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Whether an error means "try again later" (throttling, a network fault).
pub fn is_transient<E: ProvideErrorMetadata>(error: &aws_sdk_kinesis::error::SdkError<E>) -> bool {
    use aws_sdk_kinesis::error::SdkError;
    match error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => matches!(
            error_code(error),
            Some(
                "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "KMSThrottlingException"
            )
        ),
        _ => false,
    }
}
