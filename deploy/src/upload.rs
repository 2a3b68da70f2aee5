//! The bundle's upload to S3.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use ops::progress::Progress;

/// Uploads `bundle` to `s3://bucket/key`.
pub async fn put_bundle(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bundle: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(bundle)
        .with_context(|| format!("reading the bundle {}", bundle.display()))?
        .len();
    progress.say(&format!(
        "uploading {} ({:.1} MB) to s3://{bucket}/{key}",
        bundle.display(),
        size as f64 / 1e6
    ));
    let body = ByteStream::from_path(bundle)
        .await
        .with_context(|| format!("reading the bundle {}", bundle.display()))?;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/zip")
        .body(body)
        .send()
        .await
        .map_err(|error| {
            if error.code() == Some("NoSuchBucket") {
                missing_bucket(bucket)
            } else {
                anyhow!("s3:PutObject failed: {}", DisplayErrorContext(&error))
            }
        })?;
    Ok(())
}

/// The error for a bucket that is not there, with the fix.
fn missing_bucket(bucket: &str) -> anyhow::Error {
    anyhow!(
        "bucket {bucket} does not exist: deploy infra/app.yaml first and use its BundleBucket \
         output"
    )
}

/// Fails unless the bucket exists and can be reached with these credentials.
pub async fn require_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<()> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
            Err(missing_bucket(bucket))
        }
        Err(error) => Err(anyhow!(
            "s3:HeadBucket ({bucket}) failed: {}",
            DisplayErrorContext(&error)
        )),
    }
}
