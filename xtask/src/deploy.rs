//! `cargo xtask deploy`: builds the bundle and runs the `deploy` crate's
//! program on it; and the test command's dry run of that program against
//! moto.

use std::process::Command;

use anyhow::{Context as _, bail, ensure};

use testkit::moto::{Moto, tools_python};
use testkit::paths::{project_root, target_dir};
use testkit::process::run;
use testkit::progress::{status, step};

use crate::bundle::{self, TARGET};
use crate::cargo::cargo;

/// The `deploy` program, built (debug: it waits on AWS, not on the CPU).
fn deploy_program() -> anyhow::Result<Command> {
    run(cargo().args(["build", "--package", "deploy", "--locked", "--quiet"]))?;
    let mut command = Command::new(target_dir().join("debug/deploy"));
    command.current_dir(project_root());
    Ok(command)
}

/// Builds the bundle, then deploys it with `args` (see `deploy --help`):
/// the same steps as `.github/workflows/deploy.yml`.
pub(crate) fn deploy(args: &[String]) -> anyhow::Result<()> {
    let bundle = bundle::build()?;
    let api = target_dir().join(TARGET).join("release/api");
    run(deploy_program()?
        .arg("--bundle")
        .arg(&bundle)
        .arg("--api")
        .arg(&api)
        .args(args))
}

/// The bucket the dry run uploads to (it is created in moto first).
const BUCKET: &str = "notes-bundles-dry-run";

/// The deploy program's `--dry-run` against moto, twice: on an empty
/// account (everything is to be created), then after `api db provision`
/// created the database there (it is to be used as it is).
pub(crate) fn dry_run_against_moto() -> anyhow::Result<()> {
    let bundle = bundle::build()?;
    let api = target_dir().join(TARGET).join("release/api");
    let moto = Moto::start()?;
    let aws = |command: &mut Command| {
        moto.aim(command).env("APP_RDS__INSTANCE_ID", "notes-db");
    };
    let mut create_bucket = Command::new(tools_python()?);
    create_bucket.args([
        "-c",
        "import boto3, os, sys; boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']).create_bucket(Bucket=sys.argv[1])",
        BUCKET,
    ]);
    aws(&mut create_bucket);
    run(&mut create_bucket).context("creating the bucket in moto")?;

    let dry_run_command = || -> anyhow::Result<Command> {
        let mut command = deploy_program()?;
        command
            .args(["--dry-run", "--bucket", BUCKET, "--api"])
            .arg(&api)
            .arg("--bundle")
            .arg(&bundle)
            .args(["--instance-profile", "notes-instance-profile"])
            .args(["--service-role", "notes-eb-service"])
            .args(["--vpc-id", "vpc-0dryrun"])
            .args(["--instance-subnets", "subnet-0a,subnet-0b"])
            .args(["--elb-subnets", "subnet-0c,subnet-0d"])
            .args(["--instance-security-group", "sg-0instances"]);
        aws(&mut command);
        Ok(command)
    };
    let dry_run = |expected: &[&str]| -> anyhow::Result<()> {
        let output = dry_run_command()?
            .output()
            .context("running deploy --dry-run")?;
        let printed = String::from_utf8_lossy(&output.stdout);
        eprint!("{}{printed}", String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!("deploy --dry-run failed ({})", output.status);
        }
        for line in expected {
            ensure!(
                printed.contains(line),
                "the dry run's plan lacks `{line}`:\n{printed}"
            );
        }
        Ok(())
    };
    step("deploy dry run against moto: an empty account");
    dry_run(&[
        "would create the database",
        "would create application notes",
        "would create version notes-api-",
        "would create environment notes-prod on \"64bit Amazon Linux 2023",
        "aws:autoscaling:launchconfiguration:IamInstanceProfile=notes-instance-profile",
        "aws:ec2:vpc:VPCId=vpc-0dryrun",
        "aws:ec2:vpc:Subnets=subnet-0a,subnet-0b",
        "aws:autoscaling:launchconfiguration:SecurityGroups=sg-0instances",
        "aws:elasticbeanstalk:application:environment:APP_RDS__INSTANCE_ID=notes-db",
        "aws:ec2:instances:InstanceTypes=t3.small",
    ])?;
    step("deploy dry run against moto: Graviton instances for an x86_64 bundle");
    let output = dry_run_command()?
        .args(["--instance-type", "t4g.small"])
        .output()
        .context("running deploy --dry-run")?;
    let said = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && said.contains("t4g.small (arm64) would not run it"),
        "deploy --dry-run accepted t4g.small for an x86_64 bundle ({}):\n{said}",
        output.status
    );
    step("deploy dry run against moto: after `api db provision` there");
    let mut provision = Command::new(&api);
    provision.args(["db", "provision", "--json"]);
    aws(&mut provision);
    run(&mut provision)?;
    dry_run(&["would use database notes-db (available)"])?;
    status("the deploy's dry run passed against moto");
    Ok(())
}
