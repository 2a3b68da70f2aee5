//! What the operational commands share: [`progress`], the one progress
//! display of `api db provision` and `deploy`; [`wait`], their one polling
//! loop; [`db_report`], the reports `api db provision/status --json`
//! print, typed for the programs that read them (`deploy`, the
//! rehearsal); and [`capacity`], how many connections an RDS instance
//! takes and how many instances may share it.

pub mod capacity;
pub mod db_report;
pub mod progress;
pub mod wait;
