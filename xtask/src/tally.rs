//! The vocabulary the test stages share: how a row ended ([`Outcome`]) and the count of rows
//! passed, failed and skipped over every stage ([`Tally`]). A leaf module: the matrix and the
//! faults import it, and so does the orchestrator in `test.rs` that closes the run with
//! `N passed, M failed, K skipped`.

/// How a row of the matrix or of the faults stage ended.
pub enum Outcome {
    /// Everything it checks held; the text, if any, gives the figures it saw.
    Pass(Option<String>),
    /// What did not hold, one problem per entry (several lines each at most).
    Fail(Vec<String>),
    /// Why the row could not run here.
    Skip(String),
}

/// The rows passed, failed and skipped so far, over every stage.
#[derive(Default)]
pub struct Tally {
    /// Rows that passed.
    pub passed: usize,
    /// Rows that failed.
    pub failed: usize,
    /// Rows that were skipped.
    pub skipped: usize,
}

impl Tally {
    /// Prints the row's line (`PASS`, `FAIL` with its problems indented, or `SKIP` with the
    /// reason) and counts it.
    pub fn record(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Outcome::Pass(None) => {
                self.passed += 1;
                println!("PASS  {name}");
            }
            Outcome::Pass(Some(figures)) => {
                self.passed += 1;
                println!("PASS  {name}  ({figures})");
            }
            Outcome::Skip(reason) => {
                self.skipped += 1;
                println!("SKIP  {name}  ({reason})");
            }
            Outcome::Fail(problems) => {
                self.failed += 1;
                println!("FAIL  {name}");
                for problem in problems {
                    for line in problem.lines() {
                        println!("        {line}");
                    }
                }
            }
        }
    }
}
