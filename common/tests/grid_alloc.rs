//! A 10^7-point grid must not allocate 10^7 points: this binary counts every byte the
//! allocator hands out while the grid is built and probed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ridgeline_common::grid::Grid;
use ridgeline_common::params::ParamValue;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn ten_million_point_grid_is_lazy() {
    let before = ALLOCATED.load(Ordering::Relaxed);
    // 10 * 10 * 10 * 100 * 100 = 10^7 points.
    let axes = [("a", 10), ("b", 10), ("c", 10), ("d", 100), ("e", 100)]
        .iter()
        .map(|(n, k)| (n.to_string(), (0..*k).map(ParamValue::Int).collect()))
        .collect();
    let grid = Grid::new(axes).unwrap();
    assert_eq!(grid.len(), 10_000_000);

    // The last point, read in mixed radix: every axis at its last value.
    let last = grid.point(9_999_999).unwrap();
    assert_eq!(last["a"], ParamValue::Int(9));
    assert_eq!(last["e"], ParamValue::Int(99));
    // Point 1_234_567 = a1 b2 c3 d45 e67 by hand.
    let p = grid.point(1_234_567).unwrap();
    let got: Vec<i64> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| p[*k].as_i64().unwrap())
        .collect();
    assert_eq!(got, vec![1, 2, 3, 45, 67]);
    // Walk a stretch of the iterator too.
    assert_eq!(grid.iter().skip(5).take(1000).count(), 1000);

    let used = ALLOCATED.load(Ordering::Relaxed) - before;
    // A materialised grid would need at least 10^7 * 5 values * 24 bytes = 1.2 GB.
    assert!(used < 4 << 20, "grid allocated {used} bytes");
}
