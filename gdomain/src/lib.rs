//! gdomain's command line as a library, for the documentation generator (gale-docs):
//! the program itself is src/main.rs.

pub mod cli;
