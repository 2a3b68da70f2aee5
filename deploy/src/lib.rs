//! Deploying the Elastic Beanstalk bundle, as `.github/workflows/deploy.yml`
//! does and as a developer can from a terminal (`cargo xtask deploy`).
//!
//! The steps, in order: provision the RDS instance (`api db provision --json`,
//! RDS API only), upload the bundle to S3, create the application version
//! with processing (Elastic Beanstalk validates `.ebextensions`), create the
//! environment on the first run or update it, wait until it is Ready **and**
//! Green on the new version, smoke-test its URL, and on a failure after an
//! update redeploy the previous version and fail. Then, [`afterwards`]: the
//! master secret taken away from the instances, the web ACL kept on the
//! load balancer.
//!
//! The program reads the bundle's architecture with [`arch`] (a new
//! environment's instance types must match it), provisions with
//! [`provision`]; a [`Deployer`](deployer::Deployer)
//! runs the rest over [`upload`] (S3), [`eb`] (Elastic Beanstalk) and
//! [`smoke`] (the smoke test), for a [`target`] with a [`timing`], on the
//! AWS clients that [`clients`] configures.

pub mod afterwards;
pub mod arch;
pub mod clients;
pub mod deployer;
pub mod eb;
pub mod provision;
pub mod smoke;
pub mod target;
pub mod timing;
pub mod upload;
