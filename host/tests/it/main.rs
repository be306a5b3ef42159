//! The host's integration tests, in one test binary (one link of wasmtime,
//! the AWS SDK and ferrokinesis instead of one per file). Each module runs
//! the real plugin components; see ARCHITECTURE.md for what each covers.

#[macro_use]
mod common;

mod aggregation;
mod architecture;
mod cli;
mod consumer;
mod fan_out;
mod faults;
mod group_logic;
mod languages;
mod leases;
mod local_dev;
mod new_project;
mod reshard;
mod run_cli;
mod sandbox;
mod scale_out;
mod seeds;
mod swap;
