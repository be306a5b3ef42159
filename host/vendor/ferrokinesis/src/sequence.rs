pub use ferrokinesis_core::sequence::*;
