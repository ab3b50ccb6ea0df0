//! `ListPodSandbox` and `ListContainers` as a relist reads them: every object stays encoded,
//! and only its id, state and labels are read from it.
//!
//! A periodic relist (the kubelet's generic PLEG, every second) lists every sandbox and
//! container on the node to find the few that changed. Decoding each listed object in full,
//! with its label and annotation maps, is most of an idle agent's CPU time at a few hundred
//! pods. Here the response's buffer is kept as one shared allocation, each object is a
//! zero-copy slice of it, and [`Listed::decode`] gives the whole typed message only for the
//! objects a caller needs.

use crate::runtime::v1 as cri;
use prost::Message;
use prost::bytes::Bytes;
use std::marker::PhantomData;
use tonic::transport::Channel;

/// One listed sandbox or container: id, state and labels read, the rest still encoded.
pub struct Listed<T> {
    /// The object's id.
    pub id: String,
    /// Its state, as the wire enum's number (`PodSandboxState` or `ContainerState`).
    pub state: i32,
    labels: Vec<Bytes>,
    raw: Bytes,
    kind: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Listed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listed")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("bytes", &self.raw.len())
            .finish()
    }
}

impl<T: Message + Default> Listed<T> {
    /// The value of one label, if the object has it (and it is UTF-8, as protobuf strings are).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find_map(|e| {
            let (k, v) = map_entry(e)?;
            (k == key.as_bytes())
                .then(|| std::str::from_utf8(v).ok())
                .flatten()
        })
    }

    /// The whole typed message.
    pub fn decode(&self) -> Result<T, prost::DecodeError> {
        T::decode(self.raw.clone())
    }
}

/// The key and value of one encoded `map<string, string>` entry (fields 1 and 2).
fn map_entry(mut b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut key, mut value): (&[u8], &[u8]) = (b"", b"");
    while !b.is_empty() {
        let (tag, wire) = prost::encoding::decode_key(&mut b).ok()?;
        if wire != prost::encoding::WireType::LengthDelimited {
            return None;
        }
        let len = usize::try_from(prost::encoding::decode_varint(&mut b).ok()?).ok()?;
        if len > b.len() {
            return None;
        }
        let (field, rest) = b.split_at(len);
        b = rest;
        match tag {
            1 => key = field,
            2 => value = field,
            _ => {}
        }
    }
    Some((key, value))
}

/// A list response with each object left encoded (field 1 of both list responses).
#[derive(Clone, PartialEq, Message)]
struct RawList {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    items: Vec<Bytes>,
}

/// The fields of `PodSandbox` a relist reads; prost skips the others.
#[derive(Clone, PartialEq, Message)]
struct SandboxHead {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int32, tag = "3")]
    state: i32,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    labels: Vec<Bytes>,
}

/// The fields of `Container` a relist reads; prost skips the others.
#[derive(Clone, PartialEq, Message)]
struct ContainerHead {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int32, tag = "6")]
    state: i32,
    #[prost(bytes = "bytes", repeated, tag = "8")]
    labels: Vec<Bytes>,
}

/// How one list call is made and its objects' heads are read.
trait ListCall: Message + Default {
    type Request: Message + Default + 'static;
    type Head: Message + Default;
    const METHOD: &'static str;
    const PATH: &'static str;
    fn parts(head: Self::Head) -> (String, i32, Vec<Bytes>);
}

impl ListCall for cri::PodSandbox {
    type Request = cri::ListPodSandboxRequest;
    type Head = SandboxHead;
    const METHOD: &'static str = "ListPodSandbox";
    const PATH: &'static str = "/runtime.v1.RuntimeService/ListPodSandbox";
    fn parts(h: SandboxHead) -> (String, i32, Vec<Bytes>) {
        (h.id, h.state, h.labels)
    }
}

impl ListCall for cri::Container {
    type Request = cri::ListContainersRequest;
    type Head = ContainerHead;
    const METHOD: &'static str = "ListContainers";
    const PATH: &'static str = "/runtime.v1.RuntimeService/ListContainers";
    fn parts(h: ContainerHead) -> (String, i32, Vec<Bytes>) {
        (h.id, h.state, h.labels)
    }
}

/// Reads the heads of a raw list's objects.
fn heads<T: ListCall>(list: RawList) -> Result<Vec<Listed<T>>, prost::DecodeError> {
    list.items
        .into_iter()
        .map(|raw| {
            let (id, state, labels) = T::parts(T::Head::decode(raw.clone())?);
            Ok(Listed {
                id,
                state,
                labels,
                raw,
                kind: PhantomData,
            })
        })
        .collect()
}

async fn list<T: ListCall>(
    channel: Channel,
    request: T::Request,
) -> Result<tonic::Response<Vec<Listed<T>>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::MAX_MESSAGE_SIZE);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    let mut req = tonic::Request::new(request);
    req.extensions_mut().insert(tonic::GrpcMethod::new(
        "runtime.v1.RuntimeService",
        T::METHOD,
    ));
    let codec = tonic_prost::ProstCodec::<T::Request, RawList>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(T::PATH);
    let resp = grpc.unary(req, path, codec).await?;
    let (meta, list, ext) = resp.into_parts();
    let items = heads::<T>(list)
        .map_err(|e| tonic::Status::internal(format!("decoding {}: {e}", T::METHOD)))?;
    Ok(tonic::Response::from_parts(meta, items, ext))
}

/// `ListPodSandbox`, each sandbox left encoded but for its id, state and labels.
pub async fn list_pod_sandboxes(
    channel: Channel,
    request: cri::ListPodSandboxRequest,
) -> Result<tonic::Response<Vec<Listed<cri::PodSandbox>>>, tonic::Status> {
    list::<cri::PodSandbox>(channel, request).await
}

/// `ListContainers`, each container left encoded but for its id, state and labels.
pub async fn list_containers(
    channel: Channel,
    request: cri::ListContainersRequest,
) -> Result<tonic::Response<Vec<Listed<cri::Container>>>, tonic::Status> {
    list::<cri::Container>(channel, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, state: cri::ContainerState) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: "sb".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 3,
            }),
            state: state as i32,
            created_at: 42,
            labels: [
                ("io.kubernetes.pod.uid".to_string(), "u-1".to_string()),
                ("io.kubernetes.pod.name".to_string(), "web".to_string()),
                ("empty".to_string(), String::new()),
            ]
            .into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn heads_read_id_state_labels_and_decode_gives_the_whole_message() {
        let sent = cri::ListContainersResponse {
            containers: vec![
                container("c1", cri::ContainerState::ContainerRunning),
                container("c2", cri::ContainerState::ContainerExited),
            ],
        };
        let list = RawList::decode(Bytes::from(sent.encode_to_vec())).expect("raw list");
        let got = heads::<cri::Container>(list).expect("heads");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "c1");
        assert_eq!(got[1].state, cri::ContainerState::ContainerExited as i32);
        assert_eq!(got[0].label("io.kubernetes.pod.uid"), Some("u-1"));
        assert_eq!(got[0].label("io.kubernetes.pod.name"), Some("web"));
        assert_eq!(got[0].label("empty"), Some(""));
        assert_eq!(got[0].label("io.kubernetes.pod.namespace"), None);
        assert_eq!(got[1].decode().expect("decode"), sent.containers[1]);
    }

    #[test]
    fn sandbox_heads_use_the_sandbox_field_numbers() {
        let sb = cri::PodSandbox {
            id: "s1".into(),
            state: cri::PodSandboxState::SandboxNotready as i32,
            labels: [("k".to_string(), "v".to_string())].into(),
            runtime_handler: "runc".into(),
            ..Default::default()
        };
        let sent = cri::ListPodSandboxResponse {
            items: vec![sb.clone()],
        };
        let list = RawList::decode(Bytes::from(sent.encode_to_vec())).expect("raw list");
        let got = heads::<cri::PodSandbox>(list).expect("heads");
        assert_eq!(got[0].id, "s1");
        assert_eq!(got[0].state, cri::PodSandboxState::SandboxNotready as i32);
        assert_eq!(got[0].label("k"), Some("v"));
        assert_eq!(got[0].decode().expect("decode"), sb);
    }

    #[test]
    fn malformed_entries_read_as_absent() {
        assert_eq!(map_entry(&[0x0a, 0x05, b'a']), None);
        assert_eq!(map_entry(&[0x08, 0x01]), None);
        assert_eq!(
            map_entry(&[0x0a, 0x01, b'k', 0x12, 0x01, b'v']),
            Some((&b"k"[..], &b"v"[..]))
        );
    }
}
