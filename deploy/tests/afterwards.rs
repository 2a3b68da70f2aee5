//! What a deploy does once it is Green, against the SDK's mocks: the
//! instance role tagged so the instances lose the master secret, and the
//! web ACL kept on the environment's load balancer.

use aws_sdk_elasticbeanstalk::operation::describe_environment_resources::DescribeEnvironmentResourcesOutput;
use aws_sdk_elasticbeanstalk::types::{EnvironmentResourceDescription, LoadBalancer};
use aws_sdk_iam::operation::list_role_tags::ListRoleTagsOutput;
use aws_sdk_iam::operation::tag_role::TagRoleOutput;
use aws_sdk_iam::types::Tag;
use aws_sdk_wafv2::operation::associate_web_acl::AssociateWebAclOutput;
use aws_sdk_wafv2::operation::get_web_acl_for_resource::GetWebAclForResourceOutput;
use aws_sdk_wafv2::types::{VisibilityConfig, WebAcl};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use deploy::afterwards::{BOOTSTRAPPED_TAG, keep_web_acl, withdraw_master_secret};
use deploy::target::Target;
use ops::progress::Progress;

const ROLE: &str = "notes-app-InstanceRole-ABC";
const LOAD_BALANCER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/awseb--AWSEB-x/0123";
const ACL: &str = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/notes-prod-rate-limit/1";

fn tags(tags: Vec<(&str, &str)>) -> ListRoleTagsOutput {
    ListRoleTagsOutput::builder()
        .set_tags(Some(
            tags.into_iter()
                .map(|(key, value)| Tag::builder().key(key).value(value).build().expect("a tag"))
                .collect(),
        ))
        .build()
        .expect("an output")
}

#[tokio::test]
async fn a_green_deploy_takes_the_master_secret_away_from_the_instances_once() {
    let untagged = mock!(aws_sdk_iam::Client::list_role_tags)
        .match_requests(|request| request.role_name() == Some(ROLE))
        .then_output(|| tags(vec![("application", "notes-api")]));
    let tag = mock!(aws_sdk_iam::Client::tag_role)
        .match_requests(|request| {
            request.role_name() == Some(ROLE)
                && request.tags().len() == 1
                && request.tags()[0].key() == BOOTSTRAPPED_TAG
                && request.tags()[0].value() == "true"
        })
        .then_output(|| TagRoleOutput::builder().build());
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[&untagged, &tag]);

    withdraw_master_secret(&iam, ROLE, &Progress::new("deploy"))
        .await
        .expect("tags the role");

    assert_eq!(tag.num_calls(), 1, "the role is tagged");

    let tagged = mock!(aws_sdk_iam::Client::list_role_tags)
        .then_output(|| tags(vec![(BOOTSTRAPPED_TAG, "true")]));
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[&tagged]);
    withdraw_master_secret(&iam, ROLE, &Progress::new("deploy"))
        .await
        .expect("a tagged role is left as it is (no TagRole call: the mock has none)");
}

fn environment_with_load_balancer(name: &str) -> DescribeEnvironmentResourcesOutput {
    DescribeEnvironmentResourcesOutput::builder()
        .environment_resources(
            EnvironmentResourceDescription::builder()
                .environment_name("notes-prod")
                .load_balancers(LoadBalancer::builder().name(name).build())
                .build(),
        )
        .build()
}

fn web_acl(arn: &str) -> WebAcl {
    WebAcl::builder()
        .name("acl")
        .id("1")
        .arn(arn)
        .default_action(aws_sdk_wafv2::types::DefaultAction::builder().build())
        .visibility_config(
            VisibilityConfig::builder()
                .sampled_requests_enabled(false)
                .cloud_watch_metrics_enabled(false)
                .metric_name("acl")
                .build()
                .expect("a visibility config"),
        )
        .build()
        .expect("a web ACL")
}

fn target() -> Target {
    Target {
        application: "notes".to_owned(),
        environment: "notes-prod".to_owned(),
        bucket: "bundles".to_owned(),
    }
}

#[tokio::test]
async fn the_web_acl_is_put_on_a_load_balancer_that_lacks_it_and_left_where_it_is() {
    let resources = mock!(aws_sdk_elasticbeanstalk::Client::describe_environment_resources)
        .then_output(|| environment_with_load_balancer(LOAD_BALANCER));
    let eb = mock_client!(aws_sdk_elasticbeanstalk, RuleMode::MatchAny, &[&resources]);
    let none = mock!(aws_sdk_wafv2::Client::get_web_acl_for_resource)
        .match_requests(|request| request.resource_arn() == Some(LOAD_BALANCER))
        .then_output(|| GetWebAclForResourceOutput::builder().build());
    let associate = mock!(aws_sdk_wafv2::Client::associate_web_acl)
        .match_requests(|request| {
            request.resource_arn() == Some(LOAD_BALANCER) && request.web_acl_arn() == Some(ACL)
        })
        .then_output(|| AssociateWebAclOutput::builder().build());
    let waf = mock_client!(aws_sdk_wafv2, RuleMode::MatchAny, &[&none, &associate]);

    keep_web_acl(&eb, &waf, &target(), ACL, &Progress::new("deploy"))
        .await
        .expect("associates");

    assert_eq!(associate.num_calls(), 1);

    let already = mock!(aws_sdk_wafv2::Client::get_web_acl_for_resource).then_output(|| {
        GetWebAclForResourceOutput::builder()
            .web_acl(web_acl(ACL))
            .build()
    });
    let waf = mock_client!(aws_sdk_wafv2, RuleMode::MatchAny, &[&already]);
    keep_web_acl(&eb, &waf, &target(), ACL, &Progress::new("deploy"))
        .await
        .expect("an associated ACL is left as it is (no AssociateWebACL: the mock has none)");
}

#[tokio::test]
async fn an_environment_without_an_application_load_balancer_is_refused_by_name() {
    let classic = mock!(aws_sdk_elasticbeanstalk::Client::describe_environment_resources)
        .then_output(|| environment_with_load_balancer("awseb-e-x-AWSEBLoa-CLASSIC"));
    let eb = mock_client!(aws_sdk_elasticbeanstalk, RuleMode::MatchAny, &[&classic]);
    let waf = mock_client!(aws_sdk_wafv2, RuleMode::MatchAny, &[]);

    let refused = keep_web_acl(&eb, &waf, &target(), ACL, &Progress::new("deploy"))
        .await
        .expect_err("no ARN, no association");

    assert!(
        refused
            .to_string()
            .contains("has no application load balancer"),
        "{refused}"
    );
}
