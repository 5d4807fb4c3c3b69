//! The generated `mixer` component (components/README.md): big enough that compiling it takes a
//! noticeable time, as real components do, so that `cargo run -- warm` shows what the store saves.
//! The three WAT components compile in a few milliseconds in total.
//!
//! Its core module holds [`FUNCS`] functions of [`STEPS`] add/multiply/xor/rotate steps over
//! [`LANES`] 64-bit locals, with constants from a fixed splitmix64 sequence; the export
//! `mix(seed: u64) -> u64` runs the seed through all of them in turn. Everything is a pure function
//! of the constants below, so the generator gives the same bytes on every machine, and
//! [`expected_mix`] computes in Rust what the component must return.
//!
//! Regenerate config/wasm after changing anything here:
//! `WNC_UPDATE_COMPONENTS=1 cargo test --test shipped_components`.

/// Name in `config/wasm.conf`'s comment and in the tests.
pub const NAME: &str = "mixer";
/// Functions chained by `mix`. FUNCS x STEPS sets the compile time (see components/README.md).
pub const FUNCS: usize = 160;
/// Mixing steps per function.
pub const STEPS: usize = 256;
/// Values each function keeps live: twice x86-64's general registers, so that register allocation
/// spills and works hard, as on real code; with 16 lanes the same work compiled about 25% faster
/// per byte, so the binary would have to be bigger for the same compile time.
pub const LANES: usize = 32;
/// The generator's seed; any fixed value works.
const SEED: u64 = 0x006d_6978_6572; // "mixer" in ASCII

enum Op {
    /// `v[a] += v[b]`
    Add,
    /// `v[a] *= v[b] | 1` (odd, so lanes never collapse to zero)
    Mul,
}

/// `v[a] = op(v[a], v[b]); v[d] = rotl(v[d] ^ v[a], rot)`, with `d != a`.
struct Step {
    op: Op,
    a: usize,
    b: usize,
    d: usize,
    rot: u32,
}

struct Func {
    /// Lane `j` starts as `x ^ init[j]`.
    init: [u64; LANES],
    steps: Vec<Step>,
}

/// A fixed, dependency-free PRNG: the plan must not depend on any crate's version.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn plan() -> Vec<Func> {
    let mut rng = SEED;
    (0..FUNCS)
        .map(|_| {
            let init = std::array::from_fn(|_| splitmix64(&mut rng));
            let steps = (0..STEPS)
                .map(|_| {
                    let r = splitmix64(&mut rng);
                    let a = (r % LANES as u64) as usize;
                    let b = ((r >> 8) % LANES as u64) as usize;
                    let d = (a + 1 + ((r >> 16) % (LANES as u64 - 1)) as usize) % LANES;
                    let rot = 1 + ((r >> 24) % 63) as u32;
                    let op = if (r >> 32) & 1 == 0 { Op::Add } else { Op::Mul };
                    Step { op, a, b, d, rot }
                })
                .collect();
            Func { init, steps }
        })
        .collect()
}

/// The component's WAT text. Lane `j` is local `j + 1` (local 0 is the parameter).
pub fn wat() -> String {
    let mut w = String::from("(component\n  (core module $m\n");
    for (i, f) in plan().iter().enumerate() {
        w.push_str(&format!("    (func $f{i} (param i64) (result i64) (local"));
        w.push_str(&" i64".repeat(LANES));
        w.push_str(")\n");
        for (j, c) in f.init.iter().enumerate() {
            // WAT takes the bit pattern as a signed literal.
            w.push_str(&format!(
                "      local.get 0 i64.const {} i64.xor local.set {}\n",
                *c as i64,
                j + 1
            ));
        }
        for s in &f.steps {
            let (a, b, d) = (s.a + 1, s.b + 1, s.d + 1);
            match s.op {
                Op::Add => w.push_str(&format!("      local.get {a} local.get {b} i64.add local.set {a}")),
                Op::Mul => w.push_str(&format!(
                    "      local.get {a} local.get {b} i64.const 1 i64.or i64.mul local.set {a}"
                )),
            }
            w.push_str(&format!(
                " local.get {d} local.get {a} i64.xor i64.const {} i64.rotl local.set {d}\n",
                s.rot
            ));
        }
        w.push_str("      local.get 1\n");
        for j in 2..=LANES {
            w.push_str(&format!("      local.get {j} i64.xor\n"));
        }
        w.push_str("    )\n");
    }
    w.push_str("    (func (export \"mix\") (param i64) (result i64)\n      local.get 0\n");
    for i in 0..FUNCS {
        w.push_str(&format!("      call $f{i}\n"));
    }
    w.push_str(
        "    ))\n  (core instance $i (instantiate $m))\n  \
         (func (export \"mix\") (param \"seed\" u64) (result u64)\n    \
         (canon lift (core func $i \"mix\"))))\n",
    );
    w
}

/// The component's bytes: what `config/wasm/<sha256>` must hold.
pub fn component() -> Vec<u8> {
    wat::parse_str(wat()).expect("the generated WAT parses")
}

/// What `mix(seed)` returns, computed in Rust from the same plan.
pub fn expected_mix(seed: u64) -> u64 {
    plan().iter().fold(seed, |x, f| {
        let mut v: [u64; LANES] = std::array::from_fn(|j| x ^ f.init[j]);
        for s in &f.steps {
            v[s.a] = match s.op {
                Op::Add => v[s.a].wrapping_add(v[s.b]),
                Op::Mul => v[s.a].wrapping_mul(v[s.b] | 1),
            };
            v[s.d] = (v[s.d] ^ v[s.a]).rotate_left(s.rot);
        }
        v.iter().fold(0, |acc, l| acc ^ l)
    })
}
