//! gwho's command line, for gale-docs; the program is main.rs.

pub mod cli;
