//! RESP2/RESP3 codec: frames, the reply decoder, the request decoder, the encoder.

pub mod decode;
pub mod encode;
mod error;
mod frame;
mod limits;
pub mod request;

pub use decode::FrameDecoder;
pub use encode::{encode, to_vec};
pub use error::ProtocolError;
pub use frame::Frame;
pub use limits::Limits;
pub use request::{Request, RequestDecoder, RequestView};
