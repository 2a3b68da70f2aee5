//! The deploy's calls that moto (the AWS emulator `cargo xtask test` starts,
//! `AWS_ENDPOINT_URL`) implements: S3, Elastic Beanstalk applications,
//! environments and solution stacks, and the read-only dry run.

use std::time::Duration;

use deploy::deployer::Deployer;
use deploy::eb::{NewEnvironment, OptionSetting};
use deploy::target::Target;
use deploy::timing::Timing;
use ops::progress::Progress;

/// Clients for moto. Its tests are `#[ignore]`d, so a plain `cargo test`
/// skips them; run without moto (`--include-ignored`), they fail here naming
/// the command that starts it.
async fn moto() -> Deployer {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests with `cargo xtask test`, which starts moto",
    );
    let (eb, s3) = deploy::clients::aws_clients()
        .await
        .expect("clients for moto");
    Deployer {
        eb,
        s3,
        timing: Timing {
            poll: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
            green_grace: Duration::from_secs(1),
        },
        progress: Progress::new("deploy"),
    }
}

/// Names no other test uses (moto keeps its state for the whole run).
fn target(name: &str) -> Target {
    Target {
        application: format!("notes-{name}-{}", std::process::id()),
        environment: format!("{name}-env"),
        bucket: format!("bundles-{name}-{}", std::process::id()),
    }
}

async fn create_bucket(deployer: &Deployer, bucket: &str) {
    deployer
        .s3
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("moto creates the bucket");
}

fn bundle(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("deploy-moto-{name}-{}.zip", std::process::id()));
    std::fs::write(&path, format!("bundle of {name}")).expect("temp file writes");
    path
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn the_bundle_is_uploaded_to_the_bucket() {
    let deployer = moto().await;
    let target = target("upload");
    create_bucket(&deployer, &target.bucket).await;
    let bundle = bundle("upload");

    deploy::upload::put_bundle(
        &deployer.s3,
        &target.bucket,
        &target.key("v1"),
        &bundle,
        &deployer.progress,
    )
    .await
    .expect("the upload succeeds");

    let stored = deployer
        .s3
        .get_object()
        .bucket(&target.bucket)
        .key(format!("{}/v1.zip", target.application))
        .send()
        .await
        .expect("the object is there");
    assert_eq!(stored.content_type(), Some("application/zip"));
    let bytes = stored
        .body
        .collect()
        .await
        .expect("body reads")
        .into_bytes();
    assert_eq!(bytes.as_ref(), std::fs::read(&bundle).expect("reads"));
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn a_missing_bucket_is_named_with_the_fix() {
    let deployer = moto().await;
    let error = deploy::upload::put_bundle(
        &deployer.s3,
        "no-such-bucket-here",
        "k.zip",
        &bundle("missing"),
        &deployer.progress,
    )
    .await
    .expect_err("there is no bucket");
    let message = format!("{error:#}");
    assert!(
        message.contains("no-such-bucket-here does not exist"),
        "{message}"
    );
    assert!(message.contains("infra/app.yaml"), "{message}");
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn the_application_is_created_once() {
    let deployer = moto().await;
    let target = target("app");
    for _ in 0..2 {
        deploy::eb::ensure_application(&deployer.eb, &target.application, &deployer.progress)
            .await
            .expect("ensuring the application succeeds");
    }
    let found = deployer
        .eb
        .describe_applications()
        .application_names(&target.application)
        .send()
        .await
        .expect("describes");
    let named = found
        .applications()
        .iter()
        .filter(|app| app.application_name() == Some(target.application.as_str()))
        .count();
    assert_eq!(named, 1);
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn a_first_deploy_creates_the_environment_on_the_go_platform() {
    let deployer = moto().await;
    let target = target("create");
    deploy::eb::ensure_application(&deployer.eb, &target.application, &deployer.progress)
        .await
        .expect("the application is created");
    assert!(
        deploy::eb::find_environment(&deployer.eb, &target)
            .await
            .expect("describes")
            .is_none()
    );
    let new = NewEnvironment {
        option_settings: vec![OptionSetting::new(
            "aws:ec2:instances",
            "InstanceTypes",
            "t3.small",
        )],
        ..NewEnvironment::default()
    };

    deploy::eb::create_environment(&deployer.eb, &target, "v1", &new, &deployer.progress)
        .await
        .expect("moto creates the environment");

    let environment = deploy::eb::find_environment(&deployer.eb, &target)
        .await
        .expect("describes")
        .expect("the environment exists now");
    assert_eq!(
        environment.environment_name(),
        Some(target.environment.as_str())
    );
    assert_eq!(
        environment.application_name(),
        Some(target.application.as_str())
    );
    // moto accepts the call but keeps neither the stack nor the settings;
    // what it does answer is the list the default stack is picked from.
    let stack = deploy::eb::solution_stack(&deployer.eb, None)
        .await
        .expect("lists stacks");
    assert!(stack.starts_with("64bit Amazon Linux 2023 v"), "{stack}");
    assert!(stack.ends_with(" running Go 1"), "{stack}");
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn the_dry_run_plans_a_first_deploy_and_changes_nothing() {
    let deployer = moto().await;
    let target = target("dry");
    create_bucket(&deployer, &target.bucket).await;
    let launch = "aws:autoscaling:launchconfiguration";
    let new = NewEnvironment {
        option_settings: vec![
            OptionSetting::new(launch, "IamInstanceProfile", "notes-instance"),
            OptionSetting::new(
                "aws:elasticbeanstalk:environment",
                "ServiceRole",
                "notes-eb",
            ),
            OptionSetting::new("aws:ec2:vpc", "VPCId", "vpc-1"),
            OptionSetting::new("aws:ec2:vpc", "Subnets", "subnet-a"),
            OptionSetting::new("aws:ec2:vpc", "ELBSubnets", "subnet-b"),
            OptionSetting::new(launch, "SecurityGroups", "sg-instances"),
        ],
        ..NewEnvironment::default()
    };
    let without_network = NewEnvironment {
        option_settings: new.option_settings[..2].to_vec(),
        ..NewEnvironment::default()
    };
    let refused = deployer
        .plan(&target, &bundle("dry"), "v1", &without_network)
        .await
        .expect_err("a dry run stops where the deploy would");
    assert!(refused.to_string().contains("--vpc-id"), "{refused}");

    let plan = deployer
        .plan(&target, &bundle("dry"), "v1", &new)
        .await
        .expect("the plan is made");

    let text = plan
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(&format!("create application {}", target.application)),
        "{text}"
    );
    assert!(text.contains("create version v1 with processing"), "{text}");
    assert!(
        text.contains("create environment dry-env on \"64bit Amazon Linux 2023"),
        "{text}"
    );
    assert!(
        text.contains("aws:autoscaling:launchconfiguration:IamInstanceProfile=notes-instance"),
        "{text}"
    );
    let objects = deployer
        .s3
        .list_objects_v2()
        .bucket(&target.bucket)
        .send()
        .await
        .expect("lists");
    assert_eq!(objects.key_count(), Some(0), "nothing was uploaded");
    let applications = deployer
        .eb
        .describe_applications()
        .application_names(&target.application)
        .send()
        .await
        .expect("describes");
    assert!(
        !applications
            .applications()
            .iter()
            .any(|app| app.application_name() == Some(target.application.as_str())),
        "no application was created"
    );
}
