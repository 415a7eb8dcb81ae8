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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rkyv::rancor::Source;

    use super::*;

    /// Drops of `Counted` values, to see which elements a failed deserialization frees.
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    /// An element that counts its drops and refuses to deserialize from zero.
    #[derive(Debug, rkyv::Archive, rkyv::Serialize)]
    struct Counted(u32);

    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("zero is refused")]
    struct Zero;

    impl<D> Deserialize<Counted, D> for ArchivedCounted
    where
        D: Fallible + ?Sized,
        D::Error: Source,
    {
        fn deserialize(&self, _: &mut D) -> Result<Counted, D::Error> {
            match self.0.to_native() {
                0 => Err(D::Error::new(Zero)),
                n => Ok(Counted(n)),
            }
        }
    }

    #[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    struct Holder {
        #[rkyv(with = FreeOnError)]
        items: Vec<Counted>,
    }

    /// When the third element is refused, the two built before it are dropped (rkyv's own `Vec`
    /// deserializer leaks them), and the adapter archives exactly as a plain `Vec` does.
    #[test]
    fn a_refused_element_drops_the_ones_built_before_it() {
        let holder = Holder { items: vec![Counted(1), Counted(2), Counted(0), Counted(4)] };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&holder).unwrap();
        let plain = rkyv::to_bytes::<rkyv::rancor::Error>(&holder.items).unwrap();
        assert_eq!(bytes[..], plain[..], "archived exactly as the plain vector");
        let before = DROPPED.load(Ordering::SeqCst);
        let refused = rkyv::from_bytes::<Holder, rkyv::rancor::BoxedError>(&bytes);
        assert_eq!(refused.unwrap_err().to_string(), "zero is refused");
        assert_eq!(DROPPED.load(Ordering::SeqCst) - before, 2);
    }
}
