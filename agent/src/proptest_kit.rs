//! The property tests' runner set-up, shared by the manifest and the options properties:
//! bounded case counts (`PROPTEST_CASES` in the environment wins, for a longer soak), no
//! failure persistence files written into the repo, shrinking bounded in time.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// `cases` cases, no persistence files; `PROPTEST_CASES` in the environment wins.
pub fn config(cases: u32) -> Config {
    let default = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        // A failure is reported within a minute even when its inputs are slow to shrink.
        max_shrink_time: 60_000,
        ..default
    }
}

/// Runs `test` over `cases` inputs drawn from `strategy`; a failure panics with its shrunk input.
pub fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}
