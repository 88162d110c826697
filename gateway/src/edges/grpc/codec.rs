//! `Subscribe`'s codec: the request is decoded by prost; each response is a
//! `pushgate.v1.Event` message already encoded (by prost, once per event
//! where streams share it), so sending one is a copy into the call's buffer.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use super::proto::{Event, SubscribeRequest};

/// One encoded `pushgate.v1.Event`, without gRPC's length prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl From<&Event> for Encoded {
    fn from(ev: &Event) -> Self {
        Encoded(ev.encode_to_vec().into())
    }
}

/// The codec of `pushgate.v1.Pushgate/Subscribe`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = Encoded;
    type Decode = SubscribeRequest;
    type Encoder = Copying;
    type Decoder = ProstDecoder<SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        Copying
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes an encoded message as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copying;

impl Encoder for Copying {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_event_decodes_to_itself() {
        let ev = Event {
            id: "c1".into(),
            topic: "t".into(),
            seq: 7,
            event_type: "message".into(),
            data: "a\nb".into(),
        };
        let Encoded(bytes) = Encoded::from(&ev);
        assert_eq!(Event::decode(bytes).unwrap(), ev);
    }
}
