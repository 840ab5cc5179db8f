//! Built-in clisc volumetric-segmenters.
