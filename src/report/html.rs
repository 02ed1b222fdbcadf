//! placeholder
use super::Report;
impl Report {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        String::new()
    }
}
