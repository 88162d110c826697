//! Headless Debian Chromium against real gateway processes.

mod browser_demo;
mod browser_quic;
mod browser_refusals;
mod browser_token_renewal;
