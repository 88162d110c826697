//! `Subscribe`'s codec: the request is decoded by prost; each response is a
//! `pushgate.v1.Event` message already encoded (by prost, once per event
//! where streams share it), so sending one is a copy into the call's buffer.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
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

/// The call's buffer starts this small: most events are a few hundred
/// bytes, and a larger one grows it. tonic's default (8 KiB) is held by
/// every open stream.
const CALL_BUFFER: usize = 1024;

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

    /// Each message leaves as soon as it is encoded, as an SSE delivery
    /// does. With tonic's default threshold (32 KiB) it would poll the
    /// subscription once more per message, only to find it empty.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CALL_BUFFER, 1)
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

    #[tokio::test]
    async fn each_message_leaves_in_a_frame_of_its_own() {
        use http_body_util::BodyExt;
        use tonic::codec::{EncodeBody, SingleMessageCompressionOverride};

        let message = |n: &str| Encoded(Bytes::from(n.as_bytes().to_vec()));
        // Both messages are ready at once: a batching encoder would send them together.
        let source = futures_util::stream::iter([Ok(message("one")), Ok(message("three"))]);
        let mut body = std::pin::pin!(EncodeBody::new_server(
            Copying,
            source,
            None,
            SingleMessageCompressionOverride::default(),
            None,
        ));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"\0\0\0\0\x03one");
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&second[..], b"\0\0\0\0\x05three");
    }
}
