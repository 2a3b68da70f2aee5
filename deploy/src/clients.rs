//! The AWS clients a deploy uses, configured once: Elastic Beanstalk and
//! S3, each call bounded in time.

/// The Elastic Beanstalk and S3 clients from the SDK's default chain
/// (region, credentials, and `AWS_ENDPOINT_URL` for an emulator).
pub async fn aws_clients() -> anyhow::Result<(aws_sdk_elasticbeanstalk::Client, aws_sdk_s3::Client)>
{
    // No call may hang the deploy: each attempt gets two minutes (a bundle
    // upload included), the SDK retries as usual.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .operation_attempt_timeout(std::time::Duration::from_secs(120))
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    anyhow::ensure!(
        config.region().is_some(),
        "no AWS region: set AWS_REGION (or a profile's region)"
    );
    // An emulator serves buckets by path, not by name.
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    Ok((
        aws_sdk_elasticbeanstalk::Client::new(&config),
        aws_sdk_s3::Client::from_conf(s3),
    ))
}
