//! Geospatial commands: GEOADD, GEODIST, GEOHASH, GEOPOS, GEORADIUS[_RO],
//! GEORADIUSBYMEMBER[_RO], GEOSEARCH, GEOSEARCHSTORE.
//!
//! A geo set is a sorted set whose scores are 52-bit interleaved geohashes, as in Redis
//! (longitude in -180..180 and latitude in ±85.05112878 each cut into 2^26 steps), so the
//! same GEOADD gives the same scores, ZRANGE and DUMP see the same set, and positions decode
//! to the same cell centres. A search covers its shape with a geohash cell at the step the
//! radius calls for and its eight neighbours, reads each cell's score range and keeps the
//! members inside the shape, in the same order as Redis, with the same distances (haversine
//! on Redis's Earth radius, through the C library's trigonometry).

use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::zsets::zadd;
use super::{get_zset, is, parse_float, Ctx, Handler, Replied, SYNTAX};
use crate::db::zset::Score;
use crate::db::{Value, ZSet};

const STEP_MAX: u32 = 26;
const LAT_MIN: f64 = -85.051_128_78;
const LAT_MAX: f64 = 85.051_128_78;
const LONG_MIN: f64 = -180.0;
const LONG_MAX: f64 = 180.0;
const EARTH_RADIUS: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("geoadd", geoadd);
    m.insert("geodist", geodist);
    m.insert("geohash", geohash);
    m.insert("geopos", geopos);
    m.insert("georadius", |c, r| {
        search(c, r, Kind::Radius { store: true })
    });
    m.insert("georadius_ro", |c, r| {
        search(c, r, Kind::Radius { store: false })
    });
    m.insert("georadiusbymember", |c, r| {
        search(c, r, Kind::ByMember { store: true })
    });
    m.insert("georadiusbymember_ro", |c, r| {
        search(c, r, Kind::ByMember { store: false })
    });
    m.insert("geosearch", |c, r| {
        search(c, r, Kind::Search { store: false })
    });
    m.insert("geosearchstore", |c, r| {
        search(c, r, Kind::Search { store: true })
    });
}

/// A geohash cell: `step` bits of each coordinate, interleaved (latitude in the even bits).
#[derive(Clone, Copy, PartialEq, Default)]
struct Cell {
    bits: u64,
    step: u32,
}

impl Cell {
    fn is_zero(&self) -> bool {
        self.bits == 0 && self.step == 0
    }
}

#[derive(Clone, Copy, Default)]
struct Area {
    lon: (f64, f64),
    lat: (f64, f64),
}

/// Spreads the low 32 bits of `v` to the even bit positions.
fn spread(v: u32) -> u64 {
    let mut x = v as u64;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

/// The inverse of `spread`: the even bits of `x`.
fn squash(x: u64) -> u32 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
    (x | (x >> 16)) as u32
}

/// Encodes a position at `step` bits per coordinate over the given latitude range (Redis's
/// own, or -90..90 for the standard geohash strings).
fn encode(lon: f64, lat: f64, step: u32, lat_range: (f64, f64)) -> Option<Cell> {
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    let lat_off = (lat - lat_range.0) / (lat_range.1 - lat_range.0) * (1u64 << step) as f64;
    let lon_off = (lon - LONG_MIN) / (LONG_MAX - LONG_MIN) * (1u64 << step) as f64;
    // C converts the offsets to uint32_t (truncating).
    Some(Cell {
        bits: spread(lat_off as u32) | (spread(lon_off as u32) << 1),
        step,
    })
}

fn decode(c: Cell) -> Area {
    let scale = (1u64 << c.step) as f64;
    let (ilat, ilon) = (squash(c.bits) as f64, squash(c.bits >> 1) as f64);
    let (lat_s, lon_s) = (LAT_MAX - LAT_MIN, LONG_MAX - LONG_MIN);
    Area {
        lat: (
            LAT_MIN + (ilat / scale) * lat_s,
            LAT_MIN + ((ilat + 1.0) / scale) * lat_s,
        ),
        lon: (
            LONG_MIN + (ilon / scale) * lon_s,
            LONG_MIN + ((ilon + 1.0) / scale) * lon_s,
        ),
    }
}

/// C's `(uint64_t)` of a double as x86-64 code computes it (out-of-range values wrap or
/// become the "indefinite" integer rather than saturate): a score that is not a geohash (any
/// sorted set can be asked) decodes to the same place as in Redis.
fn c_u64(x: f64) -> u64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    let cvt = |v: f64| {
        if v.is_nan() || !(-TWO63..TWO63).contains(&v) {
            i64::MIN
        } else {
            v as i64
        }
    };
    if x < TWO63 {
        cvt(x) as u64
    } else {
        cvt(x - TWO63) as u64 ^ (1 << 63)
    }
}

/// A member's score back to (longitude, latitude): the centre of its cell.
fn position(score: f64) -> [f64; 2] {
    let a = decode(Cell {
        bits: c_u64(score),
        step: STEP_MAX,
    });
    [
        ((a.lon.0 + a.lon.1) / 2.0).clamp(LONG_MIN, LONG_MAX),
        ((a.lat.0 + a.lat.1) / 2.0).clamp(LAT_MIN, LAT_MAX),
    ]
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS * (lat2 * D_R - lat1 * D_R).abs()
}

/// Haversine distance in meters, computed as Redis computes it.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lon1r, lon2r) = (lon1 * D_R, lon2 * D_R);
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (lat1 * D_R, lat2 * D_R);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS * a.sqrt().asin()
}

fn move_x(c: &mut Cell, d: i8) {
    let x = c.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = c.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> (64 - c.step * 2);
    let x = if d > 0 {
        x.wrapping_add(zz + 1)
    } else {
        (x | zz).wrapping_sub(zz + 1)
    };
    c.bits = (x & (0xaaaa_aaaa_aaaa_aaaau64 >> (64 - c.step * 2))) | y;
}

fn move_y(c: &mut Cell, d: i8) {
    let x = c.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = c.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - c.step * 2);
    let y = if d > 0 {
        y.wrapping_add(zz + 1)
    } else {
        (y | zz).wrapping_sub(zz + 1)
    };
    c.bits = x | (y & (0x5555_5555_5555_5555u64 >> (64 - c.step * 2)));
}

/// The eight neighbours, in Redis's search order after the centre: north, south, east,
/// west, north-east, north-west, south-east, south-west.
fn neighbours(c: Cell) -> [Cell; 8] {
    let at = |dx: i8, dy: i8| {
        let mut n = c;
        if dx != 0 {
            move_x(&mut n, dx);
        }
        if dy != 0 {
            move_y(&mut n, dy);
        }
        n
    };
    [
        at(0, 1),
        at(0, -1),
        at(1, 0),
        at(-1, 0),
        at(1, 1),
        at(-1, 1),
        at(1, -1),
        at(-1, -1),
    ]
}

#[derive(Clone, Copy)]
enum Shape {
    Circle { radius: f64 },
    Box { width: f64, height: f64 },
}

struct Query {
    center: [f64; 2],
    shape: Shape,
    /// Meters per unit.
    unit: f64,
}

impl Query {
    /// Whether a point is inside; its distance from the centre (meters) if so.
    fn contains(&self, p: [f64; 2]) -> Option<f64> {
        let [x1, y1] = self.center;
        match self.shape {
            Shape::Circle { radius } => {
                let d = distance(x1, y1, p[0], p[1]);
                (d <= radius * self.unit).then_some(d)
            }
            Shape::Box { width, height } => {
                if lat_distance(p[1], y1) > height * self.unit / 2.0 {
                    return None;
                }
                if distance(p[0], p[1], x1, p[1]) > width * self.unit / 2.0 {
                    return None;
                }
                Some(distance(x1, y1, p[0], p[1]))
            }
        }
    }

    /// The cells to scan: the centre's at the estimated step and its neighbours, those
    /// that cannot overlap the shape zeroed (Redis's geohashCalculateAreasByShapeWGS84).
    fn cells(&self) -> [Cell; 9] {
        let [lon, lat] = self.center;
        let (half_h, half_w, reach) = match self.shape {
            Shape::Circle { radius } => (radius, radius, radius),
            Shape::Box { width, height } => (
                height / 2.0,
                width / 2.0,
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt(),
            ),
        };
        let (h, w) = (self.unit * half_h, self.unit * half_w);
        let lat_delta = (h / EARTH_RADIUS) / D_R;
        let lon_delta_top = (w / EARTH_RADIUS / ((lat + lat_delta) * D_R).cos()) / D_R;
        let lon_delta_bottom = (w / EARTH_RADIUS / ((lat - lat_delta) * D_R).cos()) / D_R;
        let south = lat < 0.0;
        let min_lon = lon
            - if south {
                lon_delta_bottom
            } else {
                lon_delta_top
            };
        let max_lon = lon
            + if south {
                lon_delta_bottom
            } else {
                lon_delta_top
            };
        let (min_lat, max_lat) = (lat - lat_delta, lat + lat_delta);

        let mut steps = steps_for(reach * self.unit, lat);
        let at = |steps| {
            let c = encode(lon, lat, steps, (LAT_MIN, LAT_MAX)).unwrap_or_default();
            (c, neighbours(c), decode(c))
        };
        let (mut c, mut n, mut area) = at(steps);
        let (north, south_a, east, west) = (decode(n[0]), decode(n[1]), decode(n[2]), decode(n[3]));
        let decrease = north.lat.1 < max_lat
            || south_a.lat.0 > min_lat
            || east.lon.1 < max_lon
            || west.lon.0 > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            (c, n, area) = at(steps);
        }
        if steps >= 2 {
            let zero = Cell::default();
            // n: north, south, east, west, NE, NW, SE, SW.
            if area.lat.0 < min_lat {
                (n[1], n[7], n[6]) = (zero, zero, zero);
            }
            if area.lat.1 > max_lat {
                (n[0], n[4], n[5]) = (zero, zero, zero);
            }
            if area.lon.0 < min_lon {
                (n[3], n[7], n[5]) = (zero, zero, zero);
            }
            if area.lon.1 > max_lon {
                (n[2], n[6], n[4]) = (zero, zero, zero);
            }
        }
        [c, n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]
    }
}

/// The geohash step whose cells are about the size of the search (Redis's estimate).
fn steps_for(mut range: f64, lat: f64) -> u32 {
    if range == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u32
}

struct Found {
    member: Bytes,
    score: f64,
    dist: f64,
    pos: [f64; 2],
}

/// The members inside the query, cell by cell (scores ascending within a cell); stops
/// once `limit` (if not 0) are found.
fn members_within(z: &ZSet, q: &Query, limit: usize) -> Vec<Found> {
    let cells = q.cells();
    let mut found = Vec::new();
    let mut last: Option<usize> = None;
    for (i, cell) in cells.iter().enumerate() {
        if cell.is_zero() {
            continue;
        }
        // Huge radii make neighbours repeat: skip one equal to the last cell scanned (Redis
        // never compares with the centre, cell 0).
        if let Some(l) = last.filter(|&l| l > 0) {
            if cells[l] == *cell {
                continue;
            }
        }
        if limit > 0 && found.len() >= limit {
            break;
        }
        let shift = 52 - cell.step * 2;
        let min = (cell.bits << shift) as f64;
        let max = ((cell.bits + 1) << shift) as f64;
        for (s, m) in z.tree.range((Score(min), Bytes::new())..) {
            if s.0 >= max {
                break;
            }
            let pos = position(s.0);
            if let Some(dist) = q.contains(pos) {
                found.push(Found {
                    member: m.clone(),
                    score: s.0,
                    dist,
                    pos,
                });
            }
            if limit > 0 && found.len() >= limit {
                break;
            }
        }
        last = Some(i);
    }
    found
}

/// Parses a coordinate pair, writing Redis's error when it is not a valid one.
fn lon_lat(ctx: &mut Ctx<'_>, lon: &[u8], lat: &[u8]) -> Result<[f64; 2], Replied> {
    let (Some(x), Some(y)) = (parse_float(lon), parse_float(lat)) else {
        ctx.out.err("ERR value is not a valid float");
        return Err(Replied);
    };
    if !(LONG_MIN..=LONG_MAX).contains(&x) || !(LAT_MIN..=LAT_MAX).contains(&y) {
        ctx.out.err(&format!(
            "ERR invalid longitude,latitude pair {x:.6},{y:.6}"
        ));
        return Err(Replied);
    }
    Ok([x, y])
}

/// Meters per unit (M, KM, FT, MI).
fn unit(ctx: &mut Ctx<'_>, u: &[u8]) -> Result<f64, Replied> {
    if is(u, "m") {
        Ok(1.0)
    } else if is(u, "km") {
        Ok(1000.0)
    } else if is(u, "ft") {
        Ok(0.3048)
    } else if is(u, "mi") {
        Ok(1609.34)
    } else {
        ctx.out
            .err("ERR unsupported unit provided. please use M, KM, FT, MI");
        Err(Replied)
    }
}

fn float_or(ctx: &mut Ctx<'_>, b: &[u8], msg: &str) -> Result<f64, Replied> {
    match parse_float(b) {
        Some(v) => Ok(v),
        None => {
            ctx.out.err(msg);
            Err(Replied)
        }
    }
}

/// A radius and its unit.
fn radius(ctx: &mut Ctx<'_>, r: &[u8], u: &[u8]) -> Result<(f64, f64), Replied> {
    let d = float_or(ctx, r, "ERR need numeric radius")?;
    if d < 0.0 {
        ctx.out.err("ERR radius cannot be negative");
        return Err(Replied);
    }
    Ok((d, unit(ctx, u)?))
}

/// Distances are replied with four decimals.
fn dist_reply(ctx: &mut Ctx<'_>, d: f64) {
    ctx.out.bulk(format!("{d:.4}").as_bytes());
}

/// A coordinate as Redis's addReplyHumanLongDouble writes it: 17 decimals, trailing zeros
/// dropped; a double in RESP3.
fn coord_reply(ctx: &mut Ctx<'_>, v: f64) {
    let mut s = format!("{v:.17}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if ctx.out.resp3 {
        ctx.out.raw(format!(",{s}\r\n").as_bytes());
    } else {
        ctx.out.bulk(s.as_bytes());
    }
}

fn geoadd(ctx: &mut Ctx<'_>, req: &Request) {
    let (mut nx, mut xx) = (false, false);
    let mut first = 2;
    while first < req.len() {
        let a = req.arg(first);
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if !is(a, "ch") {
            break;
        }
        first += 1;
    }
    let rest = req.len() - first;
    if rest % 3 != 0 || (nx && xx) {
        return ctx.out.err(SYNTAX);
    }
    // ZADD with the options and (geohash, member) pairs does the rest.
    let mut args: Vec<Bytes> = Vec::with_capacity(first + rest / 3 * 2);
    args.push(Bytes::from_static(b"zadd"));
    args.extend((1..first).map(|i| req.arg_bytes(i)));
    for i in (first..req.len()).step_by(3) {
        let Ok([x, y]) = lon_lat(ctx, req.arg(i), req.arg(i + 1)) else {
            return;
        };
        let bits = encode(x, y, STEP_MAX, (LAT_MIN, LAT_MAX)).map_or(0, |c| c.bits);
        args.push(Bytes::from(bits.to_string()));
        args.push(req.arg_bytes(i + 2));
    }
    zadd(ctx, &Request::from_args(args.iter()));
}

fn geodist(ctx: &mut Ctx<'_>, req: &Request) {
    let to_m = match req.len() {
        5 => match unit(ctx, req.arg(4)) {
            Ok(u) => u,
            Err(Replied) => return,
        },
        4 => 1.0,
        _ => return ctx.out.err(SYNTAX),
    };
    let z = match get_zset(ctx, req.arg(1)) {
        Ok(Some(z)) => z,
        Ok(None) => return ctx.out.null(),
        Err(Replied) => return,
    };
    let (Some(a), Some(b)) = (z.score(req.arg(2)), z.score(req.arg(3))) else {
        return ctx.out.null();
    };
    let (p, q) = (position(a), position(b));
    dist_reply(ctx, distance(p[0], p[1], q[0], q[1]) / to_m);
}

/// The scores of the named members (None where absent).
fn scores_of(ctx: &mut Ctx<'_>, req: &Request) -> Result<Vec<Option<f64>>, Replied> {
    let z = get_zset(ctx, req.arg(1))?;
    Ok((2..req.len())
        .map(|i| z.as_ref().and_then(|z| z.score(req.arg(i))))
        .collect())
}

fn geohash(ctx: &mut Ctx<'_>, req: &Request) {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let Ok(scores) = scores_of(ctx, req) else {
        return;
    };
    ctx.out.array(scores.len());
    for s in scores {
        let Some(s) = s else {
            ctx.out.null();
            continue;
        };
        // Re-encoded over the standard latitude range -90..90 for a standard geohash; 52
        // bits make ten characters, the eleventh is '0'.
        let [x, y] = position(s);
        let bits = encode(x, y, STEP_MAX, (-90.0, 90.0)).map_or(0, |c| c.bits);
        let mut buf = [b'0'; 11];
        for (i, b) in buf.iter_mut().enumerate().take(10) {
            *b = ALPHABET[((bits >> (52 - (i + 1) * 5)) & 0x1f) as usize];
        }
        ctx.out.bulk(&buf);
    }
}

fn geopos(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok(scores) = scores_of(ctx, req) else {
        return;
    };
    ctx.out.array(scores.len());
    for s in scores {
        match s {
            None => ctx.out.null_array(),
            Some(s) => {
                let [x, y] = position(s);
                ctx.out.array(2);
                coord_reply(ctx, x);
                coord_reply(ctx, y);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Radius { store: bool },
    ByMember { store: bool },
    Search { store: bool },
}

/// A member's score in the sorted set at `key` (known to exist).
fn score_of(ctx: &mut Ctx<'_>, key: &[u8], member: &[u8]) -> Option<f64> {
    match ctx.db.get(key, ctx.now).map(|e| &e.value) {
        Some(Value::ZSet(z)) => z.score(member),
        _ => None,
    }
}

/// GEORADIUS, GEORADIUSBYMEMBER, GEOSEARCH and their variants (Redis's georadiusGeneric).
fn search(ctx: &mut Ctx<'_>, req: &Request, kind: Kind) {
    let src_idx = if matches!(kind, Kind::Search { store: true }) {
        2
    } else {
        1
    };
    let src_key = req.arg(src_idx);
    let exists = match get_zset(ctx, src_key) {
        Ok(z) => z.is_some(),
        Err(Replied) => return,
    };
    let mut center = None;
    let mut shape = None;
    let mut unit_m = 1.0;
    let mut store_key: Option<Bytes> = None;
    let base = match kind {
        Kind::Radius { .. } => {
            let Ok(c) = lon_lat(ctx, req.arg(2), req.arg(3)) else {
                return;
            };
            let Ok((r, u)) = radius(ctx, req.arg(4), req.arg(5)) else {
                return;
            };
            (center, shape, unit_m) = (Some(c), Some(Shape::Circle { radius: r }), u);
            6
        }
        Kind::ByMember { .. } => {
            if exists {
                let Some(s) = score_of(ctx, src_key, req.arg(2)) else {
                    return ctx.out.err("ERR could not decode requested zset member");
                };
                let Ok((r, u)) = radius(ctx, req.arg(3), req.arg(4)) else {
                    return;
                };
                (center, shape, unit_m) = (Some(position(s)), Some(Shape::Circle { radius: r }), u);
            }
            5
        }
        Kind::Search { store } => {
            if store {
                store_key = Some(req.arg_bytes(1));
                3
            } else {
                2
            }
        }
    };
    let search = matches!(kind, Kind::Search { .. });
    let may_store = matches!(
        kind,
        Kind::Radius { store: true } | Kind::ByMember { store: true }
    );
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut storedist = false;
    let mut sort: Option<bool> = None; // Some(true): ascending.
    let mut count: i64 = 0;
    let n = req.len();
    let mut i = base;
    while i < n {
        let a = req.arg(i);
        let left = n - i - 1; // arguments after this one
        if is(a, "withdist") {
            withdist = true;
        } else if is(a, "withhash") {
            withhash = true;
        } else if is(a, "withcoord") {
            withcoord = true;
        } else if is(a, "any") {
            any = true;
        } else if is(a, "asc") {
            sort = Some(true);
        } else if is(a, "desc") {
            sort = Some(false);
        } else if is(a, "count") && left >= 1 {
            let Some(c) = parse_i64(req.arg(i + 1)) else {
                return ctx.out.err(super::NOT_INT);
            };
            if c <= 0 {
                return ctx.out.err("ERR COUNT must be > 0");
            }
            count = c;
            i += 1;
        } else if (is(a, "store") || is(a, "storedist")) && left >= 1 && may_store {
            store_key = Some(req.arg_bytes(i + 1));
            storedist = is(a, "storedist");
            i += 1;
        } else if is(a, "storedist") && matches!(kind, Kind::Search { store: true }) {
            storedist = true;
        } else if is(a, "frommember") && left >= 1 && search && !fromloc {
            if exists {
                let Some(s) = score_of(ctx, src_key, req.arg(i + 1)) else {
                    return ctx.out.err("ERR could not decode requested zset member");
                };
                center = Some(position(s));
            }
            frommember = true;
            i += 1;
        } else if is(a, "fromlonlat") && left >= 2 && search && !frommember {
            let Ok(c) = lon_lat(ctx, req.arg(i + 1), req.arg(i + 2)) else {
                return;
            };
            center = Some(c);
            fromloc = true;
            i += 2;
        } else if is(a, "byradius") && left >= 2 && search && !bybox {
            let Ok((r, u)) = radius(ctx, req.arg(i + 1), req.arg(i + 2)) else {
                return;
            };
            (shape, unit_m) = (Some(Shape::Circle { radius: r }), u);
            byradius = true;
            i += 2;
        } else if is(a, "bybox") && left >= 3 && search && !byradius {
            let Ok(w) = float_or(ctx, req.arg(i + 1), "ERR need numeric width") else {
                return;
            };
            let Ok(h) = float_or(ctx, req.arg(i + 2), "ERR need numeric height") else {
                return;
            };
            if h < 0.0 || w < 0.0 {
                return ctx.out.err("ERR height or width cannot be negative");
            }
            let Ok(u) = unit(ctx, req.arg(i + 3)) else {
                return;
            };
            (shape, unit_m) = (
                Some(Shape::Box {
                    width: w,
                    height: h,
                }),
                u,
            );
            bybox = true;
            i += 3;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    let name = String::from_utf8_lossy(req.arg(0)).into_owned();
    if store_key.is_some() && (withdist || withhash || withcoord) {
        let what = if matches!(kind, Kind::Search { .. }) {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return ctx.out.err(&format!(
            "ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        ));
    }
    if search && !(frommember || fromloc) {
        return ctx.out.err(&format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        ));
    }
    if search && !(byradius || bybox) {
        return ctx.out.err(&format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
        ));
    }
    if any && count == 0 {
        return ctx.out.err("ERR the ANY argument requires COUNT argument");
    }
    let (true, Some(center), Some(shape)) = (exists, center, shape) else {
        // No source key.
        return match store_key {
            Some(k) => {
                ctx.db.remove(&k, ctx.now);
                ctx.out.int(0)
            }
            None => ctx.out.array(0),
        };
    };
    if count != 0 && sort.is_none() && !any {
        sort = Some(true);
    }
    let q = Query {
        center,
        shape,
        unit: unit_m,
    };
    let limit = if any { count as usize } else { 0 };
    let mut found = match ctx.db.get(src_key, ctx.now).map(|e| &e.value) {
        Some(Value::ZSet(z)) => members_within(z, &q, limit),
        _ => Vec::new(),
    };
    if found.is_empty() && store_key.is_none() {
        return ctx.out.array(0);
    }
    if let Some(asc) = sort {
        found.sort_by(|a, b| {
            let o = a
                .dist
                .partial_cmp(&b.dist)
                .unwrap_or(std::cmp::Ordering::Equal);
            if asc {
                o
            } else {
                o.reverse()
            }
        });
    }
    if count > 0 {
        found.truncate(count as usize);
    }
    let Some(dst) = store_key else {
        let opts = withdist as usize + withhash as usize + withcoord as usize;
        ctx.out.array(found.len());
        for f in &found {
            if opts > 0 {
                ctx.out.array(opts + 1);
            }
            ctx.out.bulk(&f.member);
            if withdist {
                dist_reply(ctx, f.dist / q.unit);
            }
            if withhash {
                ctx.out.int(f.score as i64);
            }
            if withcoord {
                ctx.out.array(2);
                coord_reply(ctx, f.pos[0]);
                coord_reply(ctx, f.pos[1]);
            }
        }
        return;
    };
    let n = found.len();
    if n == 0 {
        ctx.db.remove(&dst, ctx.now);
    } else {
        let mut out = ZSet::default();
        for f in found {
            let score = if storedist { f.dist / q.unit } else { f.score };
            out.insert(f.member, score);
        }
        ctx.db.set(&dst, Value::ZSet(Box::new(out)), ctx.now);
    }
    ctx.out.int(n as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_squash_are_inverse() {
        for v in [0u32, 1, 0x3ff_ffff, 0xdead_beef, u32::MAX] {
            assert_eq!(squash(spread(v)), v);
        }
    }

    #[test]
    fn palermo_encodes_as_redis() {
        // GEOADD Sicily 13.361389 38.115556 "Palermo" stores 3479099956230698.
        let c = encode(13.361389, 38.115556, STEP_MAX, (LAT_MIN, LAT_MAX)).unwrap();
        assert_eq!(c.bits, 3479099956230698);
    }
}
