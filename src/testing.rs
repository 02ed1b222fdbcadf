//! Memory assertions for tests: "this job leaves nothing behind".
//!
//! (Work in progress: the checks land in the next commits.)
