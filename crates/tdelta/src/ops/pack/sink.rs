//! The sink: a writer thread appends the new blocks, batch by batch and in
//! the order they were sent, to pack files written through the store
//! (temp file, fsync, rename; the index after its pack). The channel is
//! bounded, so at most [`QUEUE`] batches of encoded payloads wait while the
//! next window is encoded.

use crossbeam_channel::{Receiver, Sender};

use super::encode::NewBlock;
use crate::Hash;
use crate::Result;
use crate::store::pack::PackWriter;
use crate::store::{Store, WriteTxn};

/// A pack file is closed and a new one started past this size.
const PACK_ROLL_BYTES: u64 = 1 << 30;

/// Batches (windows) of encoded blocks that may wait for the writer.
const QUEUE: usize = 2;

/// The bounded channel from the encoder to [`write_packs`].
pub(super) fn channel() -> (Sender<Vec<NewBlock>>, Receiver<Vec<NewBlock>>) {
    crossbeam_channel::bounded(QUEUE)
}

/// The channel [`write_packs`] hands the payloads it wrote back through,
/// for the encoders to reuse their allocations: at most `n` wait (the
/// rest are freed), so it holds no more than a window's worth.
pub(super) fn recycling(n: usize) -> (Sender<Vec<u8>>, Receiver<Vec<u8>>) {
    crossbeam_channel::bounded(n)
}

/// Appends batches of new blocks to pack files, rolling to a new pack past
/// [`PACK_ROLL_BYTES`], and hands each payload written back to `done_with`
/// ([`recycling`]). Returns the ids of the packs written; on an error,
/// the packs it wrote are taken back.
pub(super) fn write_packs(
    rx: Receiver<Vec<NewBlock>>,
    store: &Store,
    txn: &WriteTxn,
    done_with: &Sender<Vec<u8>>,
) -> Result<Vec<Hash>> {
    let mut done = Vec::new();
    let mut cur: Option<PackWriter> = None;
    let res = (|| -> Result<()> {
        for batch in rx {
            for nb in batch {
                if cur.is_none() {
                    cur = Some(PackWriter::create(store)?);
                }
                let w = cur.as_mut().expect("writer just created");
                w.add(nb.meta, &nb.payload)?;
                let _ = done_with.try_send(nb.payload);
                if w.len() >= PACK_ROLL_BYTES {
                    let w = cur.take().expect("writer present");
                    done.push(w.finish(store)?.0);
                }
            }
        }
        if let Some(w) = cur.take() {
            done.push(w.finish(store)?.0);
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(done),
        Err(e) => {
            if let Some(w) = cur.take() {
                w.abandon();
            }
            txn.discard_packs(store, &done);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pack::BlockMeta;

    fn block(n: u8) -> NewBlock {
        let payload = vec![n; 100];
        let meta = BlockMeta {
            hash: Hash::of(&payload),
            raw_len: 100,
            codec: crate::codec::CodecId::Raw as u8,
            dtype: crate::DType::U8 as u8,
            depth: 0,
            base: None,
        };
        NewBlock { meta, payload }
    }

    fn memory_store() -> Store {
        Store::init_with(std::sync::Arc::new(crate::backend::Memory::new()), &crate::InitOptions::default()).unwrap()
    }

    fn objects(store: &Store) -> Vec<String> {
        store.backend().list("packs/").unwrap().into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn blocks_land_in_one_pack_in_the_order_sent() {
        let store = memory_store();
        let txn = store.begin_write().unwrap();
        let (tx, rx) = channel();
        tx.send(vec![block(1), block(2)]).unwrap();
        tx.send(vec![block(3)]).unwrap();
        drop(tx);
        let (back, returned) = recycling(8);
        let packs = write_packs(rx, &store, &txn, &back).unwrap();
        assert_eq!(returned.try_iter().map(|p| p.len()).collect::<Vec<_>>(), [100, 100, 100], "payloads handed back");
        assert_eq!(packs.len(), 1);
        let (bytes, _) = store.backend().get(&format!("packs/{}.pack", packs[0]), 1 << 20).unwrap();
        let at = |n: u8| bytes.windows(100).position(|w| w == [n; 100]).unwrap();
        assert!(at(1) < at(2) && at(2) < at(3));
        assert!(objects(&store).contains(&format!("packs/{}.idx", packs[0])));
    }

    #[test]
    fn nothing_sent_writes_no_pack() {
        let store = memory_store();
        let txn = store.begin_write().unwrap();
        let (tx, rx) = channel();
        drop(tx);
        assert!(write_packs(rx, &store, &txn, &recycling(1).0).unwrap().is_empty());
        assert!(objects(&store).is_empty());
    }
}
