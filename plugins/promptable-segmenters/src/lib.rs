//! Built-in clisc promptable-segmenters.
