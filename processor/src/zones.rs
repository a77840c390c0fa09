//! A building's zones (the building as a whole, each floor, each room of a floor), each with
//! its own panes, so that every window exists at all three levels.
//!
//! Maps are looked up by `&str` and only allocate the first time a zone is seen: applying a
//! reading to a known zone allocates nothing but, at most, a new pane.

use weir_schemas::Reading;

use crate::window::{Aggregate, Geometry, Panes};

/// Which part of a building a window covers. A room is named within its floor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Zone {
    pub floor: Option<String>,
    pub room: Option<String>,
}

impl Zone {
    pub const BUILDING: Zone = Zone {
        floor: None,
        room: None,
    };

    pub fn floor(floor: &str) -> Zone {
        Zone {
            floor: Some(floor.to_owned()),
            room: None,
        }
    }

    pub fn room(floor: Option<&str>, room: &str) -> Zone {
        Zone {
            floor: floor.map(str::to_owned),
            room: Some(room.to_owned()),
        }
    }

    pub fn is_building(&self) -> bool {
        self.floor.is_none() && self.room.is_none()
    }

    pub fn is_room(&self) -> bool {
        self.room.is_some()
    }
}

/// Which levels a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub building: bool,
    pub floors: bool,
    pub rooms: bool,
}

impl Levels {
    pub const ALL: Levels = Levels {
        building: true,
        floors: true,
        rooms: true,
    };
}

/// The panes of one building at every level.
#[derive(Debug, Default)]
pub struct BuildingPanes {
    total: Panes,
    /// By floor; `""` holds the rooms of readings that name a room but no floor.
    floors: foldhash::HashMap<String, FloorPanes>,
}

#[derive(Debug, Default)]
struct FloorPanes {
    total: Panes,
    rooms: foldhash::HashMap<String, Panes>,
}

impl BuildingPanes {
    pub fn add(&mut self, geometry: &Geometry, record: &impl Reading) {
        self.total.add(geometry, record);
        let (floor_name, room_name) = (record.floor(), record.room());
        if floor_name.is_none() && room_name.is_none() {
            return;
        }
        let name = floor_name.unwrap_or("");
        let floor = match self.floors.get_mut(name) {
            Some(floor) => floor,
            None => self.floors.entry(name.to_owned()).or_default(),
        };
        if floor_name.is_some() {
            floor.total.add(geometry, record);
        }
        if let Some(name) = room_name {
            let room = match floor.rooms.get_mut(name) {
                Some(room) => room,
                None => floor.rooms.entry(name.to_owned()).or_default(),
            };
            room.add(geometry, record);
        }
    }

    /// The building's own panes.
    pub fn total(&self) -> &Panes {
        &self.total
    }

    /// Forgets panes that start before `t`, and zones left without any.
    pub fn evict_before(&mut self, t: i64) {
        self.total.evict_before(t);
        self.floors.retain(|_, floor| {
            floor.total.evict_before(t);
            floor.rooms.retain(|_, room| {
                room.evict_before(t);
                !room.is_empty()
            });
            !floor.total.is_empty() || !floor.rooms.is_empty()
        });
    }

    /// The union of panes in `[start, end)` of every zone of the `levels` asked for that has
    /// readings there (the building always), sorted by zone.
    pub fn between(&self, start: i64, end: i64, levels: Levels) -> Vec<(Zone, Aggregate)> {
        let mut out = Vec::new();
        if levels.building {
            out.push((Zone::BUILDING, self.total.between(start, end)));
        }
        for (name, floor) in &self.floors {
            if levels.floors && !name.is_empty() {
                let aggregate = floor.total.between(start, end);
                if aggregate.readings > 0 {
                    out.push((Zone::floor(name), aggregate));
                }
            }
            if levels.rooms {
                let floor_name = (!name.is_empty()).then_some(name.as_str());
                for (room, panes) in &floor.rooms {
                    let aggregate = panes.between(start, end);
                    if aggregate.readings > 0 {
                        out.push((Zone::room(floor_name, room), aggregate));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use weir_schemas::{Measure, Telemetry};

    use super::*;

    const SEC: i64 = 1_000_000;
    const GEOMETRY: Geometry = Geometry {
        window_us: 60 * SEC,
        hop_us: 10 * SEC,
    };

    fn reading(floor: Option<&str>, room: Option<&str>, t: i64, value: f64) -> Telemetry {
        let mut r = Telemetry::new("t", "b", "d", 0, t, "test");
        r.floor = floor.map(str::to_owned);
        r.room = room.map(str::to_owned);
        r.temperature = Some(value);
        r
    }

    #[test]
    fn every_reading_counts_at_each_level_it_names() {
        let mut panes = BuildingPanes::default();
        panes.add(&GEOMETRY, &reading(Some("1"), Some("1-01"), 0, 20.0));
        panes.add(&GEOMETRY, &reading(Some("1"), Some("1-02"), SEC, 22.0));
        panes.add(&GEOMETRY, &reading(Some("2"), Some("2-01"), 2 * SEC, 24.0));
        panes.add(&GEOMETRY, &reading(None, Some("lobby"), 3 * SEC, 26.0));
        panes.add(&GEOMETRY, &reading(None, None, 4 * SEC, 28.0));
        let zones = panes.between(0, 60 * SEC, Levels::ALL);
        let count = |zone: &Zone| {
            zones
                .iter()
                .find(|(z, _)| z == zone)
                .map(|(_, a)| a.get(Measure::Temperature).count)
        };
        assert_eq!(count(&Zone::BUILDING), Some(5));
        assert_eq!(count(&Zone::floor("1")), Some(2));
        assert_eq!(count(&Zone::floor("2")), Some(1));
        assert_eq!(count(&Zone::room(Some("1"), "1-02")), Some(1));
        assert_eq!(count(&Zone::room(None, "lobby")), Some(1));
        assert_eq!(zones.len(), 1 + 2 + 4);
        let floors_only = Levels {
            building: false,
            floors: true,
            rooms: false,
        };
        assert_eq!(panes.between(0, 60 * SEC, floors_only).len(), 2);
    }

    #[test]
    fn eviction_forgets_empty_zones() {
        let mut panes = BuildingPanes::default();
        panes.add(&GEOMETRY, &reading(Some("1"), Some("1-01"), 0, 20.0));
        panes.add(&GEOMETRY, &reading(Some("2"), Some("2-01"), 30 * SEC, 20.0));
        panes.evict_before(20 * SEC);
        let zones = panes.between(0, 60 * SEC, Levels::ALL);
        assert_eq!(zones.len(), 3, "{zones:?}");
        assert!(!panes.floors.contains_key("1"));
    }
}
