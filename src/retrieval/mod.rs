//! Retrieval: the encoder boundary, exact search over a candidate pool (dense cosine and
//! MaxSim), TREC run/qrels files, and measures with trec_eval's semantics.
//!
//! Data flows text → [`encoder::Encoder`] → vectors → [`search()`] → ranks → [`metrics`];
//! [`evaluate`] strings them together for one [`crate::data::RetrievalTask`].

pub mod encoder;
pub mod evaluate;
pub mod metrics;
pub mod search;
pub mod trec;

pub use encoder::{Encoder, HashingEncoder, TokenVectors};
pub use metrics::{Measure, RankedQuery};
pub use search::{search, DenseVectors, Pool, QueryHits, Scorer};
