//! rkyv adapters for the engine's archived types (snapshots, format-1 journal records).

use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// `#[rkyv(with = FreeOnError)]` on a `Vec` field: archived exactly as the `Vec` itself (the
/// bytes do not change), but deserialized element by element into a growing `Vec`. When an
/// element fails (a name its constructor refuses, `ids.rs`), the elements built so far are
/// dropped and their memory freed; rkyv 0.8.18's own `Vec` deserializer leaks them.
#[derive(Debug, Clone, Copy)]
pub struct FreeOnError;

impl<T: Archive> ArchiveWith<Vec<T>> for FreeOnError {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve_with(field: &Vec<T>, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_slice(field.as_slice(), resolver, out);
    }
}

impl<T, S> SerializeWith<Vec<T>, S> for FreeOnError
where
    T: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(field: &Vec<T>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(field.as_slice(), serializer)
    }
}

impl<T, D> DeserializeWith<ArchivedVec<T::Archived>, Vec<T>, D> for FreeOnError
where
    T: Archive,
    T::Archived: Deserialize<T, D>,
    D: Fallible + ?Sized,
{
    fn deserialize_with(
        field: &ArchivedVec<T::Archived>,
        deserializer: &mut D,
    ) -> Result<Vec<T>, D::Error> {
        let mut out = Vec::with_capacity(field.len());
        for item in field.iter() {
            out.push(item.deserialize(deserializer)?);
        }
        Ok(out)
    }
}
