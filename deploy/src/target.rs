//! Where a deploy goes: the Elastic Beanstalk application and environment,
//! and the S3 bucket that holds their versions' bundles.

/// Where the bundle goes: names of the application, environment and bucket.
#[derive(Debug, Clone)]
pub struct Target {
    /// Elastic Beanstalk application.
    pub application: String,
    /// Elastic Beanstalk environment.
    pub environment: String,
    /// S3 bucket for source bundles.
    pub bucket: String,
}

impl Target {
    /// The S3 key of a version's bundle.
    pub fn key(&self, label: &str) -> String {
        format!("{}/{label}.zip", self.application)
    }
}
