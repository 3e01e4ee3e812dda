//! `tdelta info` (what a store is) and `tdelta upgrade` (format 1 to 2).

use anyhow::Result;

use crate::{Global, fmt, open_store, print_json};

pub fn info(g: &Global) -> Result<()> {
    let info = open_store(g)?.info()?;
    if g.json {
        return print_json(&serde_json::to_value(&info)?);
    }
    println!("store       {}", info.path.display());
    println!("format      {}", info.format);
    println!("hash        {}", info.hash);
    println!("block size  {}", fmt::bytes(u64::from(info.block_size)));
    println!("backend     {}", info.backend);
    println!("versions    {}", info.versions);
    println!("packs       {}", info.packs);
    println!("blocks      {}", info.blocks);
    println!("bytes       {}", fmt::bytes(info.bytes));
    println!("refs        {}", info.refs);
    Ok(())
}

pub fn upgrade(g: &Global) -> Result<()> {
    let mut store = open_store(g)?;
    let rep = store.upgrade()?;
    if g.json {
        return print_json(&serde_json::to_value(rep)?);
    }
    if rep.unchanged() {
        println!("store is already format {}", rep.to);
    } else {
        println!("upgraded store from format {} to {}: new versions get blake3 ids", rep.from, rep.to);
    }
    Ok(())
}
