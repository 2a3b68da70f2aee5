//! Scaling that respects the database: every instance of the service holds
//! up to `database.max_connections` connections (plus one while it
//! migrates on start), so the environment's largest size times that must
//! fit in what the RDS instance accepts. RDS for PostgreSQL sets
//! `max_connections` to `LEAST({DBInstanceClassMemory/9531392}, 5000)` by
//! default (RDS User Guide, "Maximum number of database connections");
//! `DBInstanceClassMemory` is the class's memory less what the operating
//! system and RDS keep, which AWS does not publish.

/// Bytes of memory per connection in RDS's default formula.
const BYTES_PER_CONNECTION: u64 = 9_531_392;

/// RDS's ceiling on the default.
const MOST_CONNECTIONS: u64 = 5_000;

/// Connections RDS keeps for superusers and itself
/// (`superuser_reserved_connections` 3, `rds.rds_superuser_reserved_connections` 2).
pub const RESERVED_CONNECTIONS: u32 = 5;

/// Connections one instance of the service may open: the pool, and one
/// more while `serve` migrates on start.
pub fn per_instance(pool: u32) -> u32 {
    pool + 1
}

/// Memory of an RDS instance class, in MiB, for the classes this project
/// suggests (burstable and general-purpose Graviton and x86 families).
fn memory_mib(class: &str) -> Option<u64> {
    let (family, size) = class.strip_prefix("db.")?.split_once('.')?;
    let burstable = matches!(family, "t3" | "t4g");
    let general = matches!(family, "m5" | "m6g" | "m6i" | "m7g" | "m7i");
    let memory = matches!(family, "r5" | "r6g" | "r6i" | "r7g" | "r7i");
    let gib: u64 = match size {
        "micro" if burstable => 1,
        "small" if burstable => 2,
        "medium" if burstable => 4,
        "large" if burstable || general => 8,
        "xlarge" if burstable || general => 16,
        "2xlarge" if burstable || general => 32,
        "4xlarge" if general => 64,
        "large" if memory => 16,
        "xlarge" if memory => 32,
        "2xlarge" if memory => 64,
        "4xlarge" if memory => 128,
        _ => return None,
    };
    Some(gib * 1024)
}

/// RDS for PostgreSQL's default `max_connections` for `class`, estimated:
/// the formula over the class's memory less 256 MiB and 2 % (what the
/// instances' own `SHOW max_connections` left, within a few connections:
/// 2 GiB gave 198, 4 GiB 413, 8 GiB 856, 15.25 GiB 1,660); `None` for a
/// class this table does not know (give the figure yourself).
pub fn rds_max_connections(class: &str) -> Option<u32> {
    let total = memory_mib(class)? * 1024 * 1024;
    let usable = total.saturating_sub(256 * 1024 * 1024 + total / 50);
    u32::try_from((usable / BYTES_PER_CONNECTION).min(MOST_CONNECTIONS)).ok()
}

/// Whether `instances` instances with a pool of `pool` each fit in a
/// database taking `max_connections`; the error says by how much they do
/// not and what to change.
pub fn check(instances: u32, pool: u32, max_connections: u32) -> Result<(), String> {
    let needed = u64::from(instances) * u64::from(per_instance(pool));
    let available = max_connections.saturating_sub(RESERVED_CONNECTIONS);
    if needed <= u64::from(available) {
        return Ok(());
    }
    let most = available / per_instance(pool);
    Err(format!(
        "{instances} instances with database.max_connections = {pool} may open {needed} \
         connections (each its pool and one to migrate), but the database takes {available} \
         ({max_connections} less {RESERVED_CONNECTIONS} RDS keeps for itself): lower the \
         environment's MaxSize to {most}, lower APP_DATABASE__MAX_CONNECTIONS, or choose a larger \
         database class"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_stays_within_what_rds_instances_reported() {
        // (class, memory that class has, what SHOW max_connections gave on
        // an instance of that memory) — the estimate must not exceed it
        // and come within 5 %.
        for (class, reported) in [
            ("db.t3.small", 198),
            ("db.t3.medium", 413),
            ("db.m5.large", 856),
        ] {
            let estimate = rds_max_connections(class).expect("a known class");
            assert!(
                estimate <= reported && estimate * 100 >= reported * 95,
                "{class}: estimated {estimate}, reported {reported}"
            );
        }
        assert_eq!(
            rds_max_connections("db.r6g.4xlarge"),
            Some(5_000),
            "the ceiling"
        );
        assert_eq!(rds_max_connections("db.x2g.large"), None);
        assert_eq!(rds_max_connections("t4g.micro"), None);
    }

    #[test]
    fn the_default_environment_fits_the_smallest_database_and_too_many_instances_do_not() {
        let micro = rds_max_connections("db.t4g.micro").expect("known");
        assert!((75..=90).contains(&micro), "db.t4g.micro: {micro}");

        assert_eq!(check(4, 4, micro), Ok(()), "the defaults: 4 instances of 4");

        let refused = check(20, 4, micro).expect_err("100 connections into ~80");
        assert!(refused.contains("may open 100 connections"), "{refused}");
        assert!(
            refused.contains(&format!("MaxSize to {}", (micro - 5) / 5)),
            "{refused}"
        );
    }
}
