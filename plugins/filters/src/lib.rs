//! Built-in clisc filters.
