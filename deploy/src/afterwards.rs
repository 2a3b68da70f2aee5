//! What a deploy does once the environment is Green and its smoke test
//! passed: takes the RDS master secret away from the instances (bootstrap
//! is done), and keeps the web ACL on the environment's load balancer.
//! Both are idempotent: every successful deploy does them again, which also
//! undoes a stack update that brought the old state back.

use anyhow::Context as _;
use ops::progress::Progress;

use crate::target::Target;

/// The tag on the instance role that takes the master secret away from
/// the instances: the role's policy denies `secretsmanager:GetSecretValue`
/// to a role carrying it (infra/app.yaml), and only its value `true` may be
/// set by a deployer, never removed.
pub const BOOTSTRAPPED_TAG: &str = "notes-bootstrapped";

/// Tags the instance role `role` as bootstrapped, unless it is already:
/// from now on no process on any instance can read the master secret.
pub async fn withdraw_master_secret(
    iam: &aws_sdk_iam::Client,
    role: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    let tags = iam
        .list_role_tags()
        .role_name(role)
        .send()
        .await
        .with_context(|| format!("iam:ListRoleTags on {role} failed"))?;
    if tags
        .tags()
        .iter()
        .any(|tag| tag.key() == BOOTSTRAPPED_TAG && tag.value() == "true")
    {
        return Ok(());
    }
    let tag = aws_sdk_iam::types::Tag::builder()
        .key(BOOTSTRAPPED_TAG)
        .value("true")
        .build()
        .context("building the role tag")?;
    iam.tag_role()
        .role_name(role)
        .tags(tag)
        .send()
        .await
        .with_context(|| format!("iam:TagRole on {role} failed"))?;
    progress.say(&format!(
        "tagged {role} {BOOTSTRAPPED_TAG}=true: the instances may no longer read the RDS master \
         secret (bootstrap is done)"
    ));
    Ok(())
}

/// Associates `web_acl` with the environment's load balancer, unless it is
/// already: a load balancer Elastic Beanstalk replaced gets it back.
pub async fn keep_web_acl(
    eb: &aws_sdk_elasticbeanstalk::Client,
    waf: &aws_sdk_wafv2::Client,
    target: &Target,
    web_acl: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    let resources = eb
        .describe_environment_resources()
        .environment_name(&target.environment)
        .send()
        .await
        .context("elasticbeanstalk:DescribeEnvironmentResources failed")?;
    // For an application load balancer, `Name` is its ARN.
    let load_balancer = resources
        .environment_resources()
        .and_then(|resources| resources.load_balancers().first())
        .and_then(|balancer| balancer.name())
        .filter(|name| name.starts_with("arn:"))
        .with_context(|| {
            format!(
                "{} has no application load balancer to put the web ACL on",
                target.environment
            )
        })?
        .to_owned();
    let current = waf
        .get_web_acl_for_resource()
        .resource_arn(&load_balancer)
        .send()
        .await
        .context("wafv2:GetWebACLForResource failed")?;
    if current.web_acl().map(|acl| acl.arn()) == Some(web_acl) {
        return Ok(());
    }
    waf.associate_web_acl()
        .web_acl_arn(web_acl)
        .resource_arn(&load_balancer)
        .send()
        .await
        .context("wafv2:AssociateWebACL failed")?;
    progress.say(&format!(
        "web ACL {web_acl} associated with the load balancer {load_balancer}"
    ));
    Ok(())
}
