//! The deploy's decisions against the SDK's mocks (aws-smithy-mocks) for the
//! Elastic Beanstalk calls that moto does not implement (application
//! versions, updates, events), with the real service, on a test database,
//! standing in for the environment's URL in the smoke test.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_elasticbeanstalk::Client;
use aws_sdk_elasticbeanstalk::error::ErrorMetadata;
use aws_sdk_elasticbeanstalk::operation::create_application::CreateApplicationOutput;
use aws_sdk_elasticbeanstalk::operation::create_application_version::{
    CreateApplicationVersionError, CreateApplicationVersionOutput,
};
use aws_sdk_elasticbeanstalk::operation::create_environment::CreateEnvironmentOutput;
use aws_sdk_elasticbeanstalk::operation::describe_application_versions::DescribeApplicationVersionsOutput;
use aws_sdk_elasticbeanstalk::operation::describe_applications::DescribeApplicationsOutput;
use aws_sdk_elasticbeanstalk::operation::describe_environments::DescribeEnvironmentsOutput;
use aws_sdk_elasticbeanstalk::operation::describe_events::DescribeEventsOutput;
use aws_sdk_elasticbeanstalk::operation::list_available_solution_stacks::ListAvailableSolutionStacksOutput;
use aws_sdk_elasticbeanstalk::operation::update_environment::UpdateEnvironmentOutput;
use aws_sdk_elasticbeanstalk::types::{
    ApplicationDescription, ApplicationVersionDescription, ApplicationVersionStatus,
    EnvironmentDescription, EnvironmentHealth, EnvironmentStatus, EventDescription, EventSeverity,
};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use deploy::arch::Arch;
use deploy::deployer::Deployer;
use deploy::eb::{EnvironmentFlags, NewEnvironment, OptionSetting};
use deploy::target::Target;
use deploy::timing::Timing;
use ops::progress::Progress;
use sqlx::PgPool;

const APP: &str = "notes";
const ENV: &str = "notes-prod";

fn target() -> Target {
    Target {
        application: APP.to_owned(),
        environment: ENV.to_owned(),
        bucket: "bundles".to_owned(),
    }
}

/// A bundle file to upload, one per test (removed when dropped).
struct Bundle(PathBuf);

impl Bundle {
    fn new(test: &str) -> Bundle {
        let path =
            std::env::temp_dir().join(format!("deploy-test-{test}-{}.zip", std::process::id()));
        std::fs::write(&path, b"PK\x05\x06 not really a zip").expect("temp file writes");
        Bundle(path)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a new environment needs at least: the instance profile, the
/// service role and its network (VPC, subnets, the instances' group).
fn new_environment() -> NewEnvironment {
    NewEnvironment {
        option_settings: vec![
            OptionSetting::new(
                "aws:autoscaling:launchconfiguration",
                "IamInstanceProfile",
                "notes-instance",
            ),
            OptionSetting::new(
                "aws:elasticbeanstalk:environment",
                "ServiceRole",
                "arn:aws:iam::123456789012:role/notes-eb-service",
            ),
            OptionSetting::new("aws:ec2:vpc", "VPCId", "vpc-0123"),
            OptionSetting::new("aws:ec2:vpc", "Subnets", "subnet-a,subnet-b"),
            OptionSetting::new("aws:ec2:vpc", "ELBSubnets", "subnet-c,subnet-d"),
            OptionSetting::new(
                "aws:autoscaling:launchconfiguration",
                "SecurityGroups",
                "sg-instances",
            ),
        ],
        ..NewEnvironment::default()
    }
}

/// The real service on a free port, as the environment's CNAME.
async fn serve(pool: PgPool) -> String {
    let settings = api::config::Settings::from_figment(
        api::config::Profile::Test,
        api::config::Settings::defaults_figment(),
    )
    .expect("test settings load");
    let store = api::store::Store::connect((*pool.connect_options()).clone(), &settings.database);
    let state = api::state::AppState::new(store, &settings.web).expect("state builds");
    let router = api::startup::router(state, &settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("has an address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    address.to_string()
}

/// A CNAME where nothing listens.
fn dead_cname() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("has an address").to_string()
}

fn environment(
    status: EnvironmentStatus,
    health: EnvironmentHealth,
    label: &str,
    cname: &str,
) -> DescribeEnvironmentsOutput {
    DescribeEnvironmentsOutput::builder()
        .environments(
            EnvironmentDescription::builder()
                .application_name(APP)
                .environment_name(ENV)
                .status(status)
                .health(health)
                .version_label(label)
                .cname(cname)
                .build(),
        )
        .build()
}

fn no_environment() -> DescribeEnvironmentsOutput {
    DescribeEnvironmentsOutput::builder().build()
}

fn no_version() -> DescribeApplicationVersionsOutput {
    DescribeApplicationVersionsOutput::builder().build()
}

fn version(status: ApplicationVersionStatus) -> DescribeApplicationVersionsOutput {
    DescribeApplicationVersionsOutput::builder()
        .application_versions(
            ApplicationVersionDescription::builder()
                .application_name(APP)
                .version_label("v2")
                .status(status)
                .build(),
        )
        .build()
}

fn event(severity: EventSeverity, message: &str) -> EventDescription {
    EventDescription::builder()
        .event_date(aws_sdk_elasticbeanstalk::primitives::DateTime::from_secs(
            1_790_000_000,
        ))
        .severity(severity)
        .message(message)
        .build()
}

fn timing(green_grace: Duration) -> Timing {
    Timing {
        poll: Duration::from_millis(1),
        timeout: Duration::from_secs(10),
        green_grace,
    }
}

/// The rules every deploy passes through before the environment step: an
/// existing application, no version yet, then one that gets processed.
fn common_rules() -> Vec<Rule> {
    vec![
        mock!(Client::describe_applications).then_output(|| {
            DescribeApplicationsOutput::builder()
                .applications(
                    ApplicationDescription::builder()
                        .application_name(APP)
                        .build(),
                )
                .build()
        }),
        mock!(Client::create_application_version)
            .match_requests(|request| {
                request.process() == Some(true)
                    && request.version_label() == Some("v2")
                    && request
                        .source_bundle()
                        .is_some_and(|bundle| bundle.s3_key() == Some("notes/v2.zip"))
            })
            .then_output(|| CreateApplicationVersionOutput::builder().build()),
        mock!(Client::describe_application_versions)
            .sequence()
            .output(no_version)
            .output(|| version(ApplicationVersionStatus::Processing))
            .output(|| version(ApplicationVersionStatus::Processed))
            .repeatedly()
            .build(),
    ]
}

/// The upload of `notes/v2.zip` to the `bundles` bucket.
fn put_rule() -> Rule {
    mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|request| {
            request.bucket() == Some("bundles") && request.key() == Some("notes/v2.zip")
        })
        .then_output(|| PutObjectOutput::builder().build())
}

fn deployer_with(eb_rules: &[&Rule], put: &Rule, green_grace: Duration) -> Deployer {
    Deployer {
        eb: mock_client!(aws_sdk_elasticbeanstalk, RuleMode::MatchAny, eb_rules),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[put]),
        timing: timing(green_grace),
        progress: Progress::new("deploy"),
    }
}

fn deployer(eb_rules: &[&Rule], green_grace: Duration) -> Deployer {
    deployer_with(eb_rules, &put_rule(), green_grace)
}

fn events(list: Vec<EventDescription>) -> Rule {
    mock!(Client::describe_events).then_output(move || {
        DescribeEventsOutput::builder()
            .set_events(Some(list.clone()))
            .build()
    })
}

fn update_to(label: &'static str) -> Rule {
    mock!(Client::update_environment)
        .match_requests(move |request| request.version_label() == Some(label))
        .then_output(|| UpdateEnvironmentOutput::builder().build())
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_first_deploy_creates_the_environment_and_smoke_tests_it(pool: PgPool) {
    let cname = serve(pool.clone()).await;
    let mut rules = common_rules();
    rules[0] = mock!(Client::describe_applications)
        .then_output(|| DescribeApplicationsOutput::builder().build());
    let create_app = mock!(Client::create_application)
        .match_requests(|request| request.application_name() == Some(APP))
        .then_output(|| CreateApplicationOutput::builder().build());
    let stacks = mock!(Client::list_available_solution_stacks).then_output(|| {
        ListAvailableSolutionStacksOutput::builder()
            .solution_stacks("64bit Amazon Linux 2023 v4.4.0 running Go 1")
            .solution_stacks("64bit Amazon Linux 2023 v4.10.2 running Go 1")
            .solution_stacks("64bit Amazon Linux 2 v3.13.0 running Go 1")
            .build()
    });
    let create = mock!(Client::create_environment)
        .match_requests(|request| {
            request.version_label() == Some("v2")
                && request.solution_stack_name()
                    == Some("64bit Amazon Linux 2023 v4.10.2 running Go 1")
                && request.option_settings().iter().any(|setting| {
                    setting.option_name() == Some("IamInstanceProfile")
                        && setting.value() == Some("notes-instance")
                })
                && request
                    .option_settings()
                    .iter()
                    .any(|setting| setting.option_name() == Some("ServiceRole"))
        })
        .then_output(|| CreateEnvironmentOutput::builder().build());
    let described = {
        let cname = cname.clone();
        mock!(Client::describe_environments)
            .sequence()
            .output(no_environment)
            .output(|| {
                environment(
                    EnvironmentStatus::Launching,
                    EnvironmentHealth::Grey,
                    "v2",
                    "",
                )
            })
            .output(move || {
                environment(
                    EnvironmentStatus::Ready,
                    EnvironmentHealth::Green,
                    "v2",
                    &cname,
                )
            })
            .repeatedly()
            .build()
    };
    let events = events(vec![event(
        EventSeverity::Info,
        "createEnvironment is starting.",
    )]);
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&create_app, &stacks, &create, &described, &events]);
    let put = put_rule();
    let deployer = deployer_with(&all, &put, Duration::from_secs(5));
    let bundle = Bundle::new("first");

    let deployed = deployer
        .deploy(&target(), &bundle.0, "v2", &new_environment())
        .await
        .expect("the deploy succeeds");

    assert_eq!(deployed.url, format!("http://{cname}"));
    assert!(deployed.created);
    assert_eq!(put.num_calls(), 1, "the bundle was uploaded");
    assert_eq!(create_app.num_calls(), 1);
    assert_eq!(
        create.num_calls(),
        1,
        "created with the newest AL2023 Go platform"
    );
    // The smoke test's note is in the database.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM data WHERE notes = 'deploy smoke test of v2'")
            .fetch_one(&pool)
            .await
            .expect("query runs");
    assert_eq!(stored, 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn an_update_that_stays_red_is_rolled_back(pool: PgPool) {
    let cname = serve(pool).await;
    let rules = common_rules();
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .output(|| {
            environment(
                EnvironmentStatus::Updating,
                EnvironmentHealth::Grey,
                "v2",
                "x",
            )
        })
        .output(|| environment(EnvironmentStatus::Ready, EnvironmentHealth::Red, "v2", "x"))
        .times(2)
        .output(move || {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                &cname,
            )
        })
        .repeatedly()
        .build();
    let (to_v2, to_v1) = (update_to("v2"), update_to("v1"));
    let events = events(Vec::new());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &to_v2, &to_v1, &events]);
    let deployer = deployer(&all, Duration::ZERO);

    let error = deployer
        .deploy(
            &target(),
            &Bundle::new("t1").0,
            "v2",
            &NewEnvironment::default(),
        )
        .await
        .expect_err("a Red environment fails the deploy");

    let message = format!("{error:#}");
    assert!(message.contains("rolled back to v1"), "{message}");
    assert!(message.contains("health is Red"), "{message}");
    assert_eq!((to_v2.num_calls(), to_v1.num_calls()), (1, 1));
}

/// A server that answers every request with `503 Service Unavailable`
/// (a load balancer with no healthy target); its address.
fn unavailable_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("has an address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    address
}

#[tokio::test]
async fn the_smoke_test_wants_a_200_from_health_not_just_an_answer() {
    let address = unavailable_server();

    let error = deploy::smoke::check(
        &format!("http://{address}"),
        "t",
        Duration::from_millis(200),
        &Progress::new("deploy"),
    )
    .await
    .expect_err("a 503 from /health is not healthy");

    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("GET http://{address}/health answered 503")),
        "{message}"
    );
}

#[tokio::test]
async fn a_failed_smoke_test_rolls_back() {
    let cname = dead_cname();
    let rules = common_rules();
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .output(move || {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v2",
                &cname,
            )
        })
        .times(2)
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .repeatedly()
        .build();
    let (to_v2, to_v1) = (update_to("v2"), update_to("v1"));
    let events = events(Vec::new());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &to_v2, &to_v1, &events]);
    let deployer = deployer(&all, Duration::from_millis(200));

    let error = deployer
        .deploy(
            &target(),
            &Bundle::new("t2").0,
            "v2",
            &NewEnvironment::default(),
        )
        .await
        .expect_err("nothing answers /health");

    let message = format!("{error:#}");
    assert!(message.contains("GET http://"), "{message}");
    assert!(message.contains("rolled back to v1"), "{message}");
    assert_eq!((to_v2.num_calls(), to_v1.num_calls()), (1, 1));
}

#[tokio::test]
async fn an_error_event_fails_the_deploy_even_when_ready() {
    let rules = common_rules();
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v2",
                "x",
            )
        })
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .repeatedly()
        .build();
    let (to_v2, to_v1) = (update_to("v2"), update_to("v1"));
    // The update's events hold the error; the rollback's are clean.
    let events = mock!(Client::describe_events)
        .sequence()
        .output(|| {
            DescribeEventsOutput::builder()
                .events(event(
                    EventSeverity::Error,
                    "Instance deployment failed. For details, see 'eb-engine.log'.",
                ))
                .build()
        })
        .output(|| DescribeEventsOutput::builder().build())
        .repeatedly()
        .build();
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &to_v2, &to_v1, &events]);
    let deployer = deployer(&all, Duration::from_secs(5));

    let error = deployer
        .deploy(
            &target(),
            &Bundle::new("t3").0,
            "v2",
            &NewEnvironment::default(),
        )
        .await
        .expect_err("an ERROR event fails the deploy");

    let message = format!("{error:#}");
    assert!(message.contains("Instance deployment failed"), "{message}");
    assert!(
        message.contains("rolled back to v1, which is Ready and Green"),
        "{message}"
    );
    assert_eq!(to_v1.num_calls(), 1, "{message}");
}

#[tokio::test]
async fn a_refused_bundle_stops_before_the_environment() {
    let mut rules = common_rules();
    rules[2] = mock!(Client::describe_application_versions)
        .sequence()
        .output(no_version)
        .output(|| version(ApplicationVersionStatus::Failed))
        .repeatedly()
        .build();
    let events = events(vec![event(
        EventSeverity::Error,
        "Invalid option specification in .ebextensions/02-health.config",
    )]);
    let described = mock!(Client::describe_environments).then_output(no_environment);
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&events, &described]);
    let deployer = deployer(&all, Duration::from_secs(5));

    let error = deployer
        .deploy(
            &target(),
            &Bundle::new("t4").0,
            "v2",
            &NewEnvironment::default(),
        )
        .await
        .expect_err("a Failed version stops the deploy");

    let message = format!("{error:#}");
    assert!(
        message.contains("refused the bundle of version v2"),
        "{message}"
    );
    assert!(message.contains("02-health.config"), "{message}");
    assert_eq!(described.num_calls(), 0);
}

#[tokio::test]
async fn an_existing_version_is_deployed_as_it_is_and_a_failed_first_deploy_has_no_rollback() {
    let mut rules = common_rules();
    // The same commit deployed before: its version exists and is processed.
    rules[2] = mock!(Client::describe_application_versions)
        .then_output(|| version(ApplicationVersionStatus::Processed));
    let stacks = mock!(Client::list_available_solution_stacks).then_output(|| {
        ListAvailableSolutionStacksOutput::builder()
            .solution_stacks("64bit Amazon Linux 2023 v4.4.0 running Go 1")
            .build()
    });
    let create = mock!(Client::create_environment)
        .then_output(|| CreateEnvironmentOutput::builder().build());
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(no_environment)
        .output(|| environment(EnvironmentStatus::Ready, EnvironmentHealth::Red, "v2", "x"))
        .repeatedly()
        .build();
    let update = mock!(Client::update_environment)
        .then_output(|| UpdateEnvironmentOutput::builder().build());
    let events = events(Vec::new());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&stacks, &create, &described, &update, &events]);
    let put = put_rule();
    let deployer = deployer_with(&all, &put, Duration::ZERO);
    let bundle = Bundle::new("existing");

    let error = deployer
        .deploy(&target(), &bundle.0, "v2", &new_environment())
        .await
        .expect_err("a Red new environment fails");

    let message = format!("{error:#}");
    assert!(message.contains("no previous version"), "{message}");
    assert_eq!(
        (put.num_calls(), rules[1].num_calls()),
        (0, 0),
        "the existing version's bundle is neither uploaded again nor recreated"
    );
    assert_eq!((create.num_calls(), update.num_calls()), (1, 0));
}

#[tokio::test]
async fn a_version_created_meanwhile_by_another_run_is_used() {
    let mut rules = common_rules();
    rules[1] = mock!(Client::create_application_version).then_error(|| {
        CreateApplicationVersionError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameterValue")
                .message("Application Version v2 already exists.")
                .build(),
        )
    });
    let described = mock!(Client::describe_environments).then_output(no_environment);
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.push(&described);
    let deployer = deployer(&all, Duration::ZERO);
    let bundle = Bundle::new("meanwhile");

    let error = deployer
        .deploy(&target(), &bundle.0, "v2", &NewEnvironment::default())
        .await
        .expect_err("stops at the environment: no roles given");

    // It got past the version step to the environment's.
    let message = format!("{error:#}");
    assert!(message.contains("DEPLOY_INSTANCE_PROFILE"), "{message}");
    assert_eq!(rules[1].num_calls(), 1);
}

#[tokio::test]
async fn a_new_environment_needs_its_roles() {
    let rules = common_rules();
    let described = mock!(Client::describe_environments).then_output(no_environment);
    let create = mock!(Client::create_environment)
        .then_output(|| CreateEnvironmentOutput::builder().build());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &create]);
    let deployer = deployer(&all, Duration::ZERO);
    let bundle = Bundle::new("roles");

    let error = deployer
        .deploy(&target(), &bundle.0, "v2", &NewEnvironment::default())
        .await
        .expect_err("no instance profile, no service role");

    let message = format!("{error:#}");
    assert!(message.contains("DEPLOY_INSTANCE_PROFILE"), "{message}");
    assert_eq!(create.num_calls(), 0);
}

#[tokio::test]
async fn an_environment_that_settles_on_another_version_is_a_failure() {
    let rules = common_rules();
    // Busy with an operation started elsewhere, then Ready on v1; after our
    // update it comes back Ready on v1 again (the new version did not take).
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(|| {
            environment(
                EnvironmentStatus::Updating,
                EnvironmentHealth::Grey,
                "v1",
                "x",
            )
        })
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .times(4)
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .repeatedly()
        .build();
    let (to_v2, to_v1) = (update_to("v2"), update_to("v1"));
    let events = events(Vec::new());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &to_v2, &to_v1, &events]);
    let deployer = deployer(&all, Duration::from_secs(5));
    let bundle = Bundle::new("other-version");

    let error = deployer
        .deploy(&target(), &bundle.0, "v2", &NewEnvironment::default())
        .await
        .expect_err("v2 never took");

    let message = format!("{error:#}");
    assert!(message.contains("Ready on version v1, not v2"), "{message}");
    assert_eq!((to_v2.num_calls(), to_v1.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_rollback_that_fails_too_says_so() {
    let rules = common_rules();
    let described = mock!(Client::describe_environments)
        .sequence()
        .output(|| {
            environment(
                EnvironmentStatus::Ready,
                EnvironmentHealth::Green,
                "v1",
                "x",
            )
        })
        .output(|| environment(EnvironmentStatus::Ready, EnvironmentHealth::Red, "v2", "x"))
        .repeatedly()
        .build();
    let to_v2 = update_to("v2");
    let to_v1 = mock!(Client::update_environment)
        .match_requests(|request| request.version_label() == Some("v1"))
        .then_error(|| {
            aws_sdk_elasticbeanstalk::operation::update_environment::UpdateEnvironmentError::generic(
                ErrorMetadata::builder()
                    .code("InvalidParameterValue")
                    .message("Environment named notes-prod is in an invalid state for this operation.")
                    .build(),
            )
        });
    let events = events(Vec::new());
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.extend([&described, &to_v2, &to_v1, &events]);
    let deployer = deployer(&all, Duration::ZERO);
    let bundle = Bundle::new("failed-rollback");

    let error = deployer
        .deploy(&target(), &bundle.0, "v2", &NewEnvironment::default())
        .await
        .expect_err("both fail");

    let message = format!("{error:#}");
    assert!(
        message.contains("rolling back to v1 failed too"),
        "{message}"
    );
    assert!(message.contains("invalid state"), "{message}");
    assert!(message.contains("health is Red"), "{message}");
}

#[test]
fn flags_make_the_option_settings_and_empty_values_count_as_unset() {
    let flags = EnvironmentFlags {
        instance_profile: Some("notes-instance".to_owned()),
        service_role: Some(String::new()),
        vpc_id: Some("vpc-1".to_owned()),
        instance_type: Some("t3.small".to_owned()),
        rds_instance_id: Some("notes-db".to_owned()),
        solution_stack: Some(String::new()),
        options: vec![
            "aws:ec2:instances:InstanceTypes=t3.medium"
                .parse()
                .expect("parses"),
        ],
        ..EnvironmentFlags::default()
    };

    let new = NewEnvironment::from_flags(&flags, Arch::X86_64);

    let find = |name: &str| {
        new.option_settings
            .iter()
            .filter(|setting| setting.name == name)
            .map(|setting| setting.value.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(find("IamInstanceProfile"), ["notes-instance"]);
    assert!(find("ServiceRole").is_empty(), "an empty variable is unset");
    assert_eq!(find("VPCId"), ["vpc-1"]);
    assert_eq!(find("InstanceTypes"), ["t3.medium"], "--option wins, once");
    assert_eq!(find("APP_RDS__INSTANCE_ID"), ["notes-db"]);
    assert_eq!(find("DisableIMDSv1"), ["true"]);
    assert_eq!(new.solution_stack, None);
    let refused = new.check().expect_err("no service role").to_string();
    assert!(refused.contains("--service-role"), "{refused}");
    for flag in [
        "--instance-subnets",
        "--elb-subnets",
        "--instance-security-group",
    ] {
        assert!(refused.contains(flag), "{flag} not named: {refused}");
    }
    assert!(
        !refused.contains("--vpc-id"),
        "the VPC was given: {refused}"
    );
}

#[test]
fn a_new_environment_needs_its_network_as_well_as_its_roles() {
    let complete = new_environment();
    complete.check().expect("roles and network given");
    for (namespace, name) in [
        ("aws:ec2:vpc", "VPCId"),
        ("aws:ec2:vpc", "Subnets"),
        ("aws:ec2:vpc", "ELBSubnets"),
        ("aws:autoscaling:launchconfiguration", "SecurityGroups"),
    ] {
        let mut missing = new_environment();
        missing.option_settings.retain(|setting| {
            (setting.namespace.as_str(), setting.name.as_str()) != (namespace, name)
        });
        let refused = missing.check().expect_err(name).to_string();
        assert!(refused.contains("default VPC"), "{name}: {refused}");
    }
}

#[test]
fn option_settings_parse_from_the_command_line() {
    let setting: OptionSetting = "aws:elasticbeanstalk:application:environment:APP_X=a=b"
        .parse()
        .expect("parses");
    assert_eq!(
        setting,
        OptionSetting::new(
            "aws:elasticbeanstalk:application:environment",
            "APP_X",
            "a=b"
        )
    );
    for bad in [
        "no-equals",
        "=value",
        "NoNamespace=1",
        ":Name=1",
        "aws:ec2:=1",
    ] {
        assert!(bad.parse::<OptionSetting>().is_err(), "{bad} parsed");
    }
}

#[test]
fn the_newest_go_platform_on_al2023_is_picked() {
    let stacks = [
        "64bit Amazon Linux 2023 v4.9.10 running Go 1",
        "64bit Amazon Linux 2023 v4.10.0 running Go 1",
        "64bit Amazon Linux 2023 v4.10.0 running Python 3.13",
        "64bit Amazon Linux 2 v3.99.0 running Go 1",
    ]
    .map(str::to_owned);
    assert_eq!(
        deploy::eb::newest_go_platform(&stacks).as_deref(),
        Some("64bit Amazon Linux 2023 v4.10.0 running Go 1")
    );
    assert_eq!(deploy::eb::newest_go_platform(&stacks[2..]), None);
}
