//! A power-utility simulator over real HTTP: the joint-application interface with its
//! token endpoint, rate limit and faults, including faults that strike *after* the power
//! side has applied a change (the answer is lost, the change is not).

mod faults;
pub mod generate;
mod server;
pub mod state;

pub use faults::{Fault, Injection, Target, When};
pub use server::{PowerSim, PowerSimConfig, PowerSimServer, SimStats};
pub use state::{Applications, Effect};
