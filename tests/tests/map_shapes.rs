//! The loaded XDP object against `maps::layout::shapes`, the table user space pins
//! and checks pinned maps by: every map of the object has its row and
//! matches it (kind, key and value sizes, fixed entries), and every row is
//! a map of the object.

use aya::maps::{Map, MapData};
use filter_user::dataplane::{Filter, LoadOptions, pins};
use maps::layout::shapes::{self, Entries};

/// The loader's handle of a map of the kinds `maps::layout::shapes` names.
fn data<'a>(name: &str, map: &'a Map) -> &'a MapData {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::ArrayOfMaps(d)
        | Map::RingBuf(d)
        | Map::ProgramArray(d) => d,
        other => panic!("{name}: a map of a kind maps::layout::shapes has no name for: {other:?}"),
    }
}

#[test]
fn every_map_of_the_object_matches_its_row() {
    let filter = Filter::load(LoadOptions { expected_rules: 5000, max_flows: 4096, ..LoadOptions::default() })
        .expect("load the XDP program");
    let mut seen = Vec::new();
    for (name, map) in filter.ebpf().maps() {
        // Globals (`TRACE_ENABLED`) live in maps of their sections, which
        // the compiler lays out; they are not maps the program declares.
        if name.starts_with('.') {
            continue;
        }
        let row = shapes::shape(name).unwrap_or_else(|| panic!("{name} has no row in maps::layout::shapes"));
        let info = data(name, map).info().expect("the kernel's description of the map");
        if let Err(e) = pins::check_shape(row, &info) {
            panic!("{name}: {e}");
        }
        if row.entries == Entries::Configured {
            assert!(info.max_entries() > 0, "{name}: sized by the loader");
        }
        seen.push(name.to_owned());
    }
    for row in shapes::MAPS {
        assert!(seen.iter().any(|n| n == row.name), "{} is in maps::layout::shapes but not in the object", row.name);
    }
}
