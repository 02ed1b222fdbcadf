//! Start-up from the environment, wired in one place: the `ALLOCSCOPE_*` variables (parsed by
//! `config`) are applied here, once, when the first scope begins.
//!
//! Rules:
//! * each setting is applied by the module that owns it, in this order: the stack mode
//!   (`callsite`), automatic dumps (`report::dump`), the timeline sampler (`timeline`), the
//!   memory line (`timeline`, `ALLOCSCOPE_DUMP_ABOVE`), budgets (`budget`), the HTTP server (`http`, last: it serves reports, so everything it reports on is set first);
//! * every step is idempotent and cheap once done (its own `Once`), never runs inside the
//!   allocator, and reports a bad value on stderr once without stopping the program;
//! * the modules below (tables, reports, outlets) never start one another: only the entry
//!   points above this module (`scope`, `future`, and what is built on them) call it.

/// Applies the environment once (see the module's rules). Cheap after the first call.
pub(crate) fn apply_env() {
    crate::callsite::init_from_env();
    crate::report::dump::init_from_env();
    crate::timeline::init_from_env();
    crate::timeline::init_dump_above_from_env();
    crate::budget::init_from_env();
    #[cfg(feature = "http")]
    crate::http::start_from_env();
}
