// The tracking pipeline's non-learned core: Kokkos kernels (radius graph, connected
// components) over LibTorch tensors, and the plain C++ parts (reference CC, geometric
// baseline, metrics). See docs/tracking.md.
//
// Memory: every buffer, temporaries included, is an at::Tensor; the kernels see them
// through unmanaged Kokkos Views, so LibTorch owns all memory and nothing is copied
// between the two. The Views live in HostSpace because the tensors are CPU tensors; a
// device build would take the memory space from the tensor's device instead.
#include "models/tracking/graph.hpp"

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/error.hpp"

namespace hpcml::models::tracking {

namespace {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using Policy = Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<int64_t>>;
template <typename T>
using View1 = Kokkos::View<T*, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
template <typename T>
using View2 = Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// Kokkos must be initialised before the first View or kernel. A host program that
// manages Kokkos itself keeps doing so; otherwise we initialise once and finalise at exit.
void ensure_kokkos() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (Kokkos::is_initialized()) return;
    Kokkos::InitArguments args;
    args.disable_warnings = true;
    Kokkos::initialize(args);
    std::atexit([] {
      if (Kokkos::is_initialized()) Kokkos::finalize();
    });
  });
}

const char* dtype_str(const at::Tensor& t) { return t.defined() ? c10::toString(t.scalar_type()) : "undefined"; }

// One-line checks naming the function, the tensor, expected vs found.
void check_tensor(const char* op, const char* name, const at::Tensor& t, c10::ScalarType dtype, int64_t dim) {
  HPCML_CHECK_AS(ConfigError, t.defined(), op, ": tensor '", name, "' is undefined; expected a ",
                 c10::toString(dtype), " tensor");
  HPCML_CHECK_AS(ConfigError, t.device().is_cpu(), op, ": tensor '", name, "' is on ", t.device().str(),
                 "; expected cpu");
  HPCML_CHECK_AS(ConfigError, t.scalar_type() == dtype, op, ": tensor '", name, "' has dtype ", dtype_str(t),
                 "; expected ", c10::toString(dtype));
  HPCML_CHECK_AS(ConfigError, t.dim() == dim, op, ": tensor '", name, "' has shape ", t.sizes(), "; expected ", dim,
                 " dimensions");
}

// Exclusive prefix sum in place over a[0, n) (a has n entries); returns the total.
int64_t exclusive_scan(View1<int64_t> a, int64_t n) {
  int64_t total = 0;
  Kokkos::parallel_scan(
      "hpcml::tracking::exclusive_scan", Policy(0, n),
      KOKKOS_LAMBDA(int64_t i, int64_t& partial, bool final) {
        const int64_t v = a(i);
        if (final) a(i) = partial;
        partial += v;
      },
      total);
  return total;
}

// --- heap helpers (device-portable: no std:: calls inside kernels) ----------------

KOKKOS_INLINE_FUNCTION bool pair_less(double da, int64_t ja, double db, int64_t jb) {
  return da < db || (da == db && ja < jb);
}

// Max-heap on (dist, index) over [0, n).
KOKKOS_INLINE_FUNCTION void sift_down_pair(double* d, int64_t* j, int64_t root, int64_t n) {
  while (true) {
    int64_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && pair_less(d[child], j[child], d[child + 1], j[child + 1])) ++child;
    if (!pair_less(d[root], j[root], d[child], j[child])) return;
    const double td = d[root];
    d[root] = d[child];
    d[child] = td;
    const int64_t tj = j[root];
    j[root] = j[child];
    j[child] = tj;
    root = child;
  }
}

KOKKOS_INLINE_FUNCTION void sift_up_pair(double* d, int64_t* j, int64_t i) {
  while (i > 0) {
    const int64_t parent = (i - 1) / 2;
    if (!pair_less(d[parent], j[parent], d[i], j[i])) return;
    const double td = d[parent];
    d[parent] = d[i];
    d[i] = td;
    const int64_t tj = j[parent];
    j[parent] = j[i];
    j[i] = tj;
    i = parent;
  }
}

KOKKOS_INLINE_FUNCTION void sift_down(int64_t* a, int64_t root, int64_t n) {
  while (true) {
    int64_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && a[child] < a[child + 1]) ++child;
    if (!(a[root] < a[child])) return;
    const int64_t t = a[root];
    a[root] = a[child];
    a[child] = t;
    root = child;
  }
}

// In-place heap sort, ascending: O(n log n), no extra memory.
KOKKOS_INLINE_FUNCTION void heap_sort(int64_t* a, int64_t n) {
  for (int64_t i = n / 2 - 1; i >= 0; --i) sift_down(a, i, n);
  for (int64_t end = n - 1; end > 0; --end) {
    const int64_t t = a[0];
    a[0] = a[end];
    a[end] = t;
    sift_down(a, 0, end);
  }
}

// --- union-find helpers ------------------------------------------------------------

// Kokkos 3.4 keeps atomic_load in Kokkos::Impl (it is public from Kokkos 4 on).
KOKKOS_FORCEINLINE_FUNCTION int64_t load_relaxed(int64_t* p) { return Kokkos::Impl::atomic_load(p); }

// Root of x, halving the path on the way with CAS (a pointer only ever moves to an
// ancestor, which keeps concurrent finds and hooks correct).
KOKKOS_INLINE_FUNCTION int64_t find_root(const View1<int64_t>& parent, int64_t x) {
  int64_t y = load_relaxed(&parent(x));
  while (y != x) {
    const int64_t z = load_relaxed(&parent(y));
    if (z != y) Kokkos::atomic_compare_exchange(&parent(x), y, z);
    x = y;
    y = z;
  }
  return x;
}

struct CcInputs {
  int64_t num_edges = 0;
  const int64_t* src = nullptr;
  const int64_t* dst = nullptr;
  const float* scores = nullptr;  // null: keep every edge
  at::Tensor edges, scores_tensor;  // keep contiguous copies alive
};

CcInputs check_cc_inputs(const char* op, int64_t num_nodes, const at::Tensor& edges, const at::Tensor& scores) {
  HPCML_CHECK_AS(ConfigError, num_nodes >= 0, op, ": num_nodes is ", num_nodes, "; expected >= 0");
  check_tensor(op, "edges", edges, at::kLong, 2);
  HPCML_CHECK_AS(ConfigError, edges.size(0) == 2, op, ": tensor 'edges' has shape ", edges.sizes(),
                 "; expected (2, E)");
  CcInputs in;
  in.edges = edges.contiguous();
  in.num_edges = edges.size(1);
  in.src = in.edges.data_ptr<int64_t>();
  in.dst = in.src + in.num_edges;
  if (scores.defined()) {
    check_tensor(op, "scores", scores, at::kFloat, 1);
    HPCML_CHECK_AS(ConfigError, scores.size(0) == in.num_edges, op, ": tensor 'scores' has shape ", scores.sizes(),
                   "; expected (", in.num_edges, ",) to match 'edges'");
    in.scores_tensor = scores.contiguous();
    in.scores = in.scores_tensor.data_ptr<float>();
  }
  return in;
}

}  // namespace

// --- radius graph ---------------------------------------------------------------------

namespace {

constexpr const char* kRadiusGraph = "radius_graph";

void check_radius_graph_arguments(const at::Tensor& points, const RadiusGraphOptions& options) {
  constexpr const char* kOp = kRadiusGraph;
  check_tensor(kOp, "points", points, at::kFloat, 2);
  HPCML_CHECK_AS(ConfigError, points.size(1) >= 1, kOp, ": tensor 'points' has shape ", points.sizes(),
                 "; expected (N, d) with d >= 1");
  HPCML_CHECK_AS(ConfigError, std::isfinite(options.radius) && options.radius > 0, kOp, ": radius is ",
                 options.radius, "; expected a finite value > 0");
  HPCML_CHECK_AS(ConfigError, options.max_neighbours >= 0, kOp, ": max_neighbours is ", options.max_neighbours,
                 "; expected >= 0 (0 = no limit)");
  HPCML_CHECK_AS(ConfigError, options.cell_factor > 0, kOp, ": cell_factor is ", options.cell_factor,
                 "; expected > 0");
}

// x - x is 0 for finite x and NaN for NaN or inf: a device-portable finiteness test.
void check_points_finite(const View2<const float>& x, int64_t n, int64_t d) {
  int64_t non_finite = 0;
  Kokkos::parallel_reduce(
      "hpcml::tracking::radius_graph::finite", Policy(0, n * d),
      KOKKOS_LAMBDA(int64_t k, int64_t& bad) {
        const float v = x(k / d, k % d);
        if (!(v - v == 0.0f)) ++bad;
      },
      non_finite);
  HPCML_CHECK_AS(ConfigError, non_finite == 0, kRadiusGraph, ": tensor 'points' has ", non_finite,
                 " non-finite values; expected all finite");
}

// The cell list of a radius search: cells of side >= radius over the first `dims`
// coordinates, and the points sorted by cell. Its tensors own the memory its Views see.
struct CellList {
  int dims = 0;
  double lo[3] = {0, 0, 0};
  double inv_side = 1;
  int64_t ncell[3] = {1, 1, 1};
  int64_t cells = 1;
  at::Tensor cell_t;   // (n,) the cell of each point
  at::Tensor start_t;  // (cells + 1,) where each cell's points start in order_t
  at::Tensor order_t;  // (n,) the points, by cell
};

// The grid: the points' bounding box over the first dims coordinates, cut into cells of
// side radius, coarsened until there are at most max(cell_factor * n, 1) cells.
void choose_cells(const View2<const float>& x, int64_t n, int64_t d, const RadiusGraphOptions& options,
                  CellList& list) {
  list.dims = static_cast<int>(std::min<int64_t>(d, 3));
  double hi[3] = {0, 0, 0};
  for (int k = 0; k < list.dims; ++k) {
    float mn = 0, mx = 0;
    Kokkos::parallel_reduce(
        "hpcml::tracking::radius_graph::min", Policy(0, n),
        KOKKOS_LAMBDA(int64_t i, float& m) {
          if (x(i, k) < m) m = x(i, k);
        },
        Kokkos::Min<float>(mn));
    Kokkos::parallel_reduce(
        "hpcml::tracking::radius_graph::max", Policy(0, n),
        KOKKOS_LAMBDA(int64_t i, float& m) {
          if (x(i, k) > m) m = x(i, k);
        },
        Kokkos::Max<float>(mx));
    list.lo[k] = mn;
    hi[k] = mx;
  }
  const double max_cells = std::max(1.0, options.cell_factor * static_cast<double>(n));
  double side = options.radius;
  for (int attempt = 0;; ++attempt) {
    double total = 1;
    for (int k = 0; k < list.dims; ++k) total *= std::floor((hi[k] - list.lo[k]) / side) + 1;
    if (total <= max_cells) {
      for (int k = 0; k < list.dims; ++k) {
        list.ncell[k] = static_cast<int64_t>(std::floor((hi[k] - list.lo[k]) / side)) + 1;
      }
      break;
    }
    // Coarsen: grow the side by the factor that would meet the cap for a dense grid.
    side *= std::max(1.05, std::pow(total / max_cells, 1.0 / list.dims));
    HPCML_CHECK(attempt < 200, kRadiusGraph, ": cell list did not converge (radius ", options.radius, ")");
  }
  list.cells = list.ncell[0] * list.ncell[1] * list.ncell[2];
  list.inv_side = 1.0 / side;
}

// Bins the points (counting sort by cell): cell_t, start_t and order_t.
void bin_points(const View2<const float>& x, int64_t n, CellList& list) {
  const int64_t cells = list.cells;
  const int dims = list.dims;
  const double inv_side = list.inv_side;
  const double lo0 = list.lo[0], lo1 = list.lo[1], lo2 = list.lo[2];
  const int64_t n0 = list.ncell[0], n1 = list.ncell[1], n2 = list.ncell[2];
  list.cell_t = at::empty({n}, at::kLong);
  list.start_t = at::zeros({cells + 1}, at::kLong);
  View1<int64_t> cell(list.cell_t.data_ptr<int64_t>(), n);
  View1<int64_t> start(list.start_t.data_ptr<int64_t>(), cells + 1);
  Kokkos::parallel_for(
      "hpcml::tracking::radius_graph::bin", Policy(0, n), KOKKOS_LAMBDA(int64_t i) {
        int64_t c[3] = {0, 0, 0};
        const double l[3] = {lo0, lo1, lo2};
        const int64_t m[3] = {n0, n1, n2};
        for (int k = 0; k < dims; ++k) {
          int64_t ck = static_cast<int64_t>((static_cast<double>(x(i, k)) - l[k]) * inv_side);
          c[k] = ck < 0 ? 0 : (ck >= m[k] ? m[k] - 1 : ck);
        }
        const int64_t id = (c[0] * n1 + c[1]) * n2 + c[2];
        cell(i) = id;
        Kokkos::atomic_fetch_add(&start(id), int64_t{1});
      });
  exclusive_scan(start, cells + 1);
  at::Tensor cursor_t = list.start_t.clone();
  list.order_t = at::empty({n}, at::kLong);
  View1<int64_t> cursor(cursor_t.data_ptr<int64_t>(), cells + 1);
  View1<int64_t> order(list.order_t.data_ptr<int64_t>(), n);
  Kokkos::parallel_for(
      "hpcml::tracking::radius_graph::scatter", Policy(0, n),
      KOKKOS_LAMBDA(int64_t i) { order(Kokkos::atomic_fetch_add(&cursor(cell(i)), int64_t{1})) = i; });
}

// Visits every j != i within the radius (j > i for kOnce) over the 3^dims cells around
// i's cell; calls f(j, squared distance). Copied into the kernels by value.
struct NeighbourSearch {
  View2<const float> x;
  View1<int64_t> cell, start, order;
  int64_t d = 0, n0 = 1, n1 = 1, n2 = 1;
  double r2 = 0;
  bool once = false;

  NeighbourSearch(const View2<const float>& points, const CellList& list, const RadiusGraphOptions& options)
      : x(points),
        cell(list.cell_t.data_ptr<int64_t>(), list.cell_t.size(0)),
        start(list.start_t.data_ptr<int64_t>(), list.cells + 1),
        order(list.order_t.data_ptr<int64_t>(), list.order_t.size(0)),
        d(static_cast<int64_t>(points.extent(1))), n0(list.ncell[0]), n1(list.ncell[1]), n2(list.ncell[2]),
        r2(options.radius * options.radius), once(options.direction == EdgeDirection::kOnce) {}

  template <typename F>
  KOKKOS_INLINE_FUNCTION void operator()(int64_t i, F&& f) const {
    const int64_t id = cell(i);
    const int64_t c0 = id / (n1 * n2), c1 = (id / n2) % n1, c2 = id % n2;
    for (int64_t a = (c0 > 0 ? c0 - 1 : 0); a <= (c0 + 1 < n0 ? c0 + 1 : c0); ++a) {
      for (int64_t b = (c1 > 0 ? c1 - 1 : 0); b <= (c1 + 1 < n1 ? c1 + 1 : c1); ++b) {
        for (int64_t e = (c2 > 0 ? c2 - 1 : 0); e <= (c2 + 1 < n2 ? c2 + 1 : c2); ++e) {
          const int64_t cid = (a * n1 + b) * n2 + e;
          for (int64_t s = start(cid); s < start(cid + 1); ++s) {
            const int64_t j = order(s);
            if (j == i || (once && j < i)) continue;
            double dist2 = 0;
            for (int64_t k = 0; k < d && dist2 <= r2; ++k) {
              const double diff = static_cast<double>(x(i, k)) - static_cast<double>(x(j, k));
              dist2 += diff * diff;
            }
            if (dist2 <= r2) f(j, dist2);
          }
        }
      }
    }
  }
};

// Pass 1: the edges of each source (at most k_max when k_max > 0) into offsets (n + 1),
// then offsets by an exclusive scan. Returns the number of edges.
int64_t count_edges(const NeighbourSearch& for_each_neighbour, int64_t n, int64_t k_max, View1<int64_t> offsets) {
  Kokkos::parallel_for(
      "hpcml::tracking::radius_graph::count", Policy(0, n), KOKKOS_LAMBDA(int64_t i) {
        int64_t count = 0;
        for_each_neighbour(i, [&](int64_t, double) { ++count; });
        offsets(i) = (k_max > 0 && count > k_max) ? k_max : count;
      });
  Kokkos::parallel_for(
      "hpcml::tracking::radius_graph::pad", Policy(n, n + 1), KOKKOS_LAMBDA(int64_t i) { offsets(i) = 0; });
  return exclusive_scan(offsets, n + 1);
}

// Pass 2: fill. Each source owns [offsets(i), offsets(i+1)) of the output; with a
// neighbour cap its slice is a max-heap on (distance, index) that keeps the nearest.
at::Tensor fill_edges(const NeighbourSearch& for_each_neighbour, int64_t n, int64_t k_max,
                      View1<int64_t> offsets, int64_t num_edges) {
  at::Tensor out = at::empty({2, num_edges}, at::kLong);
  at::Tensor dist_t = k_max > 0 ? at::empty({num_edges}, at::kDouble) : at::Tensor();
  View2<int64_t> out_v(out.data_ptr<int64_t>(), 2, num_edges);
  View1<double> dist_v(k_max > 0 ? dist_t.data_ptr<double>() : nullptr, k_max > 0 ? num_edges : 0);
  Kokkos::parallel_for(
      "hpcml::tracking::radius_graph::fill", Policy(0, n), KOKKOS_LAMBDA(int64_t i) {
        const int64_t base = offsets(i), cap = offsets(i + 1) - base;
        // The source's slice of row 1 (targets), and of the distance scratch.
        int64_t* row = out_v.data() + num_edges + base;
        int64_t size = 0;
        if (k_max == 0) {
          for_each_neighbour(i, [&](int64_t j, double) { row[size++] = j; });
        } else {
          double* row_d = dist_v.data() + base;
          for_each_neighbour(i, [&](int64_t j, double dist2) {
            if (size < cap) {
              row_d[size] = dist2;
              row[size] = j;
              sift_up_pair(row_d, row, size);
              ++size;
            } else if (cap > 0 && pair_less(dist2, j, row_d[0], row[0])) {
              row_d[0] = dist2;
              row[0] = j;
              sift_down_pair(row_d, row, 0, cap);
            }
          });
        }
        heap_sort(row, cap);
        for (int64_t m = 0; m < cap; ++m) out_v(0, base + m) = i;
      });
  Kokkos::fence();
  return out;
}

}  // namespace

at::Tensor radius_graph(const at::Tensor& points_in, const RadiusGraphOptions& options) {
  check_radius_graph_arguments(points_in, options);
  const at::Tensor points = points_in.contiguous();
  const int64_t n = points.size(0), d = points.size(1);
  if (n == 0) return at::empty({2, 0}, at::kLong);
  ensure_kokkos();

  View2<const float> x(points.data_ptr<float>(), n, d);
  check_points_finite(x, n, d);
  CellList list;
  choose_cells(x, n, d, options, list);
  bin_points(x, n, list);
  const NeighbourSearch search(x, list, options);
  at::Tensor offsets_t = at::empty({n + 1}, at::kLong);
  View1<int64_t> offsets(offsets_t.data_ptr<int64_t>(), n + 1);
  const int64_t num_edges = count_edges(search, n, options.max_neighbours, offsets);
  return fill_edges(search, n, options.max_neighbours, offsets, num_edges);
}

// --- connected components ---------------------------------------------------------------

at::Tensor connected_components(int64_t num_nodes, const at::Tensor& edges, const at::Tensor& scores,
                                double threshold) {
  constexpr const char* kOp = "connected_components";
  const CcInputs in = check_cc_inputs(kOp, num_nodes, edges, scores);
  at::Tensor labels = at::empty({num_nodes}, at::kLong);
  if (num_nodes == 0 && in.num_edges == 0) return labels;
  ensure_kokkos();
  const int64_t m = in.num_edges;
  View1<const int64_t> src(in.src, m), dst(in.dst, m);
  View1<const float> score(in.scores, in.scores != nullptr ? m : 0);
  const bool has_scores = in.scores != nullptr;
  const float thr = static_cast<float>(threshold);

  int64_t out_of_range = 0;
  Kokkos::parallel_reduce(
      "hpcml::tracking::cc::check", Policy(0, m),
      KOKKOS_LAMBDA(int64_t e, int64_t& bad) {
        if (src(e) < 0 || src(e) >= num_nodes || dst(e) < 0 || dst(e) >= num_nodes) ++bad;
      },
      out_of_range);
  HPCML_CHECK_AS(ConfigError, out_of_range == 0, kOp, ": tensor 'edges' has ", out_of_range,
                 " edges with a node index outside [0, ", num_nodes, ")");

  View1<int64_t> parent(labels.data_ptr<int64_t>(), num_nodes);
  Kokkos::parallel_for(
      "hpcml::tracking::cc::init", Policy(0, num_nodes), KOKKOS_LAMBDA(int64_t i) { parent(i) = i; });
  // Hook: the larger root points to the smaller; a failed CAS means the root was hooked
  // meanwhile, so retry from the new roots. Pointers only decrease, so no cycles form and
  // each tree's root is its smallest node.
  Kokkos::parallel_for(
      "hpcml::tracking::cc::hook", Policy(0, m), KOKKOS_LAMBDA(int64_t e) {
        if (has_scores && !(score(e) > thr)) return;
        int64_t u = src(e), v = dst(e);
        while (true) {
          u = find_root(parent, u);
          v = find_root(parent, v);
          if (u == v) return;
          if (u < v) {
            const int64_t t = u;
            u = v;
            v = t;
          }
          if (Kokkos::atomic_compare_exchange(&parent(u), u, v) == u) return;
        }
      });
  // Pointer jumping: every node points straight at its root, the component label.
  Kokkos::parallel_for(
      "hpcml::tracking::cc::compress", Policy(0, num_nodes),
      KOKKOS_LAMBDA(int64_t i) { Kokkos::atomic_assign(&parent(i), find_root(parent, i)); });
  Kokkos::fence();
  return labels;
}

at::Tensor connected_components_reference(int64_t num_nodes, const at::Tensor& edges, const at::Tensor& scores,
                                          double threshold) {
  constexpr const char* kOp = "connected_components_reference";
  const CcInputs in = check_cc_inputs(kOp, num_nodes, edges, scores);
  at::Tensor labels = at::empty({num_nodes}, at::kLong);
  int64_t* const parent = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < num_nodes; ++i) parent[i] = i;
  const auto find = [parent](int64_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  };
  const float thr = static_cast<float>(threshold);
  for (int64_t e = 0; e < in.num_edges; ++e) {
    const int64_t u = in.src[e], v = in.dst[e];
    HPCML_CHECK_AS(ConfigError, u >= 0 && u < num_nodes && v >= 0 && v < num_nodes, kOp, ": tensor 'edges' column ",
                   e, " is (", u, ", ", v, "); expected node indices in [0, ", num_nodes, ")");
    if (in.scores != nullptr && !(in.scores[e] > thr)) continue;
    const int64_t ru = find(u), rv = find(v);
    if (ru != rv) parent[std::max(ru, rv)] = std::min(ru, rv);
  }
  for (int64_t i = 0; i < num_nodes; ++i) parent[i] = find(i);
  return labels;
}

// --- events ------------------------------------------------------------------------------

namespace {

const io::Ragged& find_ragged(const io::Table& table, const std::string& name) {
  for (const auto& r : table.ragged) {
    if (r.name == name) return r;
  }
  HPCML_THROW(IoError, "events_from_table: table (schema '", table.schema, "') has no /", name,
              " collection; expected a datagen tracking table");
}

template <typename T>
const std::vector<T>& find_item(const io::Ragged& ragged, const std::string& name, int64_t row_elements) {
  for (const auto& c : ragged.items) {
    if (c.name != name) continue;
    const auto* data = std::get_if<std::vector<T>>(&c.data);
    HPCML_CHECK_AS(IoError, data != nullptr, "events_from_table: dataset /", ragged.name, "/", name, " has dtype ",
                   io::dtype_name(c.dtype()), "; expected another dtype (see docs/datasets.md)");
    HPCML_CHECK_AS(IoError, c.row_elements() == row_elements && c.rows() == ragged.offsets.back(),
                   "events_from_table: dataset /", ragged.name, "/", name, " has ", c.rows(), " rows of ",
                   c.row_elements(), "; expected ", ragged.offsets.back(), " rows of ", row_elements);
    return *data;
  }
  HPCML_THROW(IoError, "events_from_table: dataset /", ragged.name, "/", name, " is missing");
}

template <typename T>
at::Tensor slice_tensor(const std::vector<T>& data, int64_t first, int64_t count, int64_t width,
                        c10::ScalarType dtype) {
  std::vector<int64_t> shape{count};
  if (width > 1) shape.push_back(width);
  at::Tensor t = at::empty(shape, dtype);
  std::copy_n(data.data() + first * width, count * width, t.data_ptr<T>());
  return t;
}

// Cylindrical coordinates of the hits, in double.
struct Cylindrical {
  std::vector<double> r, phi, z;
};

Cylindrical cylindrical(const TrackingEvent& event) {
  const at::Tensor hits = event.hits.contiguous();
  const float* h = hits.data_ptr<float>();
  const int64_t n = hits.size(0);
  Cylindrical c;
  c.r.resize(n);
  c.phi.resize(n);
  c.z.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double x = h[3 * i], y = h[3 * i + 1];
    c.r[i] = std::hypot(x, y);
    c.phi[i] = std::atan2(y, x);
    c.z[i] = h[3 * i + 2];
  }
  return c;
}

void check_event(const char* op, const TrackingEvent& event) {
  check_tensor(op, "hits", event.hits, at::kFloat, 2);
  HPCML_CHECK_AS(ConfigError, event.hits.size(1) == 3, op, ": tensor 'hits' has shape ", event.hits.sizes(),
                 "; expected (N, 3)");
  const int64_t n = event.hits.size(0);
  check_tensor(op, "layer", event.layer, at::kInt, 1);
  check_tensor(op, "particle_id", event.particle_id, at::kLong, 1);
  HPCML_CHECK_AS(ConfigError, event.layer.size(0) == n && event.particle_id.size(0) == n, op,
                 ": tensors 'layer' and 'particle_id' have ", event.layer.size(0), " and ", event.particle_id.size(0),
                 " rows; expected ", n, " (one per hit)");
}

// The baseline's two features of a pair a -> b (b on the outer layer); the tuner and
// the selection share this function so that a window equal to a feature value keeps it.
struct PairFeatures {
  bool valid;  // dr > 0
  double phi_slope, z0;
};

PairFeatures pair_features(const Cylindrical& c, int64_t a, int64_t b) {
  const double dr = c.r[b] - c.r[a];
  if (!(dr > 0)) return {false, 0, 0};
  double dphi = c.phi[b] - c.phi[a];
  if (dphi > M_PI) dphi -= 2 * M_PI;
  if (dphi <= -M_PI) dphi += 2 * M_PI;
  return {true, std::abs(dphi) / dr, std::abs(c.z[a] - c.r[a] * (c.z[b] - c.z[a]) / dr)};
}

at::Tensor pairs_to_tensor(std::vector<std::pair<int64_t, int64_t>>& pairs) {
  std::sort(pairs.begin(), pairs.end());
  const auto m = static_cast<int64_t>(pairs.size());
  at::Tensor out = at::empty({2, m}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (int64_t e = 0; e < m; ++e) {
    p[e] = pairs[e].first;
    p[m + e] = pairs[e].second;
  }
  return out;
}

// Unordered pairs of a (2, E) int64 tensor as sorted unique keys (self-loops dropped if asked).
std::vector<std::pair<int64_t, int64_t>> unordered_pairs(const char* name, const at::Tensor& edges_in,
                                                         bool drop_self_loops) {
  check_tensor("edge_metrics", name, edges_in, at::kLong, 2);
  HPCML_CHECK_AS(ConfigError, edges_in.size(0) == 2, "edge_metrics: tensor '", name, "' has shape ",
                 edges_in.sizes(), "; expected (2, E)");
  const at::Tensor edges = edges_in.contiguous();
  const int64_t m = edges.size(1);
  const int64_t* p = edges.data_ptr<int64_t>();
  std::vector<std::pair<int64_t, int64_t>> out;
  out.reserve(m);
  for (int64_t e = 0; e < m; ++e) {
    const int64_t a = p[e], b = p[m + e];
    if (drop_self_loops && a == b) continue;
    out.emplace_back(std::min(a, b), std::max(a, b));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

std::vector<TrackingEvent> events_from_table(const io::Table& table) {
  const io::Ragged& hits = find_ragged(table, "hits");
  const io::Ragged& parts = find_ragged(table, "particles");
  const auto& xyz = find_item<float>(hits, "values", 3);
  const auto& layer = find_item<int32_t>(hits, "layer", 1);
  const auto& hit_pid = find_item<int64_t>(hits, "particle_id", 1);
  const auto& pvalues = find_item<float>(parts, "values", 7);
  const auto& pid = find_item<int64_t>(parts, "particle_id", 1);
  HPCML_CHECK_AS(IoError, hits.offsets.size() == parts.offsets.size(), "events_from_table: /hits/offsets has ",
                 hits.offsets.size(), " entries; expected ", parts.offsets.size(), " as /particles/offsets");
  std::vector<TrackingEvent> events;
  for (size_t e = 0; e + 1 < hits.offsets.size(); ++e) {
    const int64_t h0 = hits.offsets[e], nh = hits.offsets[e + 1] - h0;
    const int64_t p0 = parts.offsets[e], np = parts.offsets[e + 1] - p0;
    TrackingEvent ev;
    ev.hits = slice_tensor(xyz, h0, nh, 3, at::kFloat);
    ev.layer = slice_tensor(layer, h0, nh, 1, at::kInt);
    ev.particle_id = slice_tensor(hit_pid, h0, nh, 1, at::kLong);
    ev.particles = slice_tensor(pid, p0, np, 1, at::kLong);
    ev.particle_pt = at::empty({np}, at::kFloat);
    float* pt = ev.particle_pt.data_ptr<float>();
    for (int64_t i = 0; i < np; ++i) pt[i] = pvalues[(p0 + i) * 7];  // column 0: pt
    events.push_back(std::move(ev));
  }
  return events;
}

at::Tensor true_edges(const TrackingEvent& event) {
  check_event("true_edges", event);
  const Cylindrical c = cylindrical(event);
  const int64_t n = event.hits.size(0);
  const at::Tensor layer_t = event.layer.contiguous(), pid_t = event.particle_id.contiguous();
  const int32_t* layer = layer_t.data_ptr<int32_t>();
  const int64_t* pid = pid_t.data_ptr<int64_t>();
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; ++i) {
    if (pid[i] > 0) idx.push_back(i);
  }
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    if (pid[a] != pid[b]) return pid[a] < pid[b];
    if (layer[a] != layer[b]) return layer[a] < layer[b];
    if (c.r[a] != c.r[b]) return c.r[a] < c.r[b];
    return a < b;
  });
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (size_t k = 1; k < idx.size(); ++k) {
    if (pid[idx[k]] == pid[idx[k - 1]]) pairs.emplace_back(idx[k - 1], idx[k]);
  }
  return pairs_to_tensor(pairs);
}

// --- geometric baseline -----------------------------------------------------------------

at::Tensor geometric_edges(const TrackingEvent& event, const BaselineWindows& windows) {
  constexpr const char* kOp = "geometric_edges";
  check_event(kOp, event);
  HPCML_CHECK_AS(ConfigError, windows.phi_slope >= 0 && windows.z0 >= 0, kOp, ": windows are (phi_slope ",
                 windows.phi_slope, ", z0 ", windows.z0, "); expected both >= 0");
  const Cylindrical c = cylindrical(event);
  const int64_t n = event.hits.size(0);
  const at::Tensor layer_t = event.layer.contiguous();
  const int32_t* layer = layer_t.data_ptr<int32_t>();
  int32_t layers = 0;
  for (int64_t i = 0; i < n; ++i) {
    HPCML_CHECK_AS(ConfigError, layer[i] >= 0, kOp, ": tensor 'layer' holds ", layer[i], " at hit ", i,
                   "; expected >= 0");
    layers = std::max(layers, layer[i] + 1);
  }
  // Hits of each layer sorted by phi, and each layer's radial extent.
  std::vector<std::vector<int64_t>> by_layer(layers);
  std::vector<double> r_min(layers, std::numeric_limits<double>::infinity()), r_max(layers, 0);
  for (int64_t i = 0; i < n; ++i) {
    by_layer[layer[i]].push_back(i);
    r_min[layer[i]] = std::min(r_min[layer[i]], c.r[i]);
    r_max[layer[i]] = std::max(r_max[layer[i]], c.r[i]);
  }
  std::vector<std::vector<double>> phis(layers);
  for (int32_t l = 0; l < layers; ++l) {
    auto& hits = by_layer[l];
    std::sort(hits.begin(), hits.end(), [&](int64_t a, int64_t b) { return c.phi[a] < c.phi[b]; });
    for (const int64_t h : hits) phis[l].push_back(c.phi[h]);
  }
  std::vector<std::pair<int64_t, int64_t>> pairs;
  const auto consider = [&](int64_t a, int64_t b) {
    const PairFeatures f = pair_features(c, a, b);
    if (f.valid && f.phi_slope <= windows.phi_slope && f.z0 <= windows.z0) pairs.emplace_back(a, b);
  };
  for (int32_t l = 0; l + 1 < layers; ++l) {
    const auto& outer = by_layer[l + 1];
    const auto& outer_phi = phis[l + 1];
    if (by_layer[l].empty() || outer.empty()) continue;
    // An upper bound of |dphi| over the layer pair; beyond it no pair can pass.
    const double reach = windows.phi_slope * std::max(0.0, r_max[l + 1] - r_min[l]);
    for (const int64_t a : by_layer[l]) {
      if (reach >= M_PI) {
        for (const int64_t b : outer) consider(a, b);
        continue;
      }
      // phi ranges [lo, hi] with wrap-around at ±pi.
      const double lo = c.phi[a] - reach, hi = c.phi[a] + reach;
      const auto scan = [&](double from, double to) {
        auto it = std::lower_bound(outer_phi.begin(), outer_phi.end(), from);
        for (; it != outer_phi.end() && *it <= to; ++it) consider(a, outer[it - outer_phi.begin()]);
      };
      scan(std::max(lo, -M_PI), std::min(hi, M_PI));
      if (lo < -M_PI) scan(lo + 2 * M_PI, M_PI);
      if (hi > M_PI) scan(-M_PI, hi - 2 * M_PI);
    }
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  return pairs_to_tensor(pairs);
}

BaselineWindows tune_baseline(const std::vector<TrackingEvent>& events, const BaselineTuneOptions& options) {
  constexpr const char* kOp = "tune_baseline";
  const double target = options.target_efficiency + options.margin;
  HPCML_CHECK_AS(ConfigError, target > 0 && target <= 1, kOp, ": target_efficiency + margin is ", target,
                 "; expected in (0, 1]");
  HPCML_CHECK_AS(ConfigError, options.grid >= 1, kOp, ": grid is ", options.grid, "; expected >= 1");
  HPCML_CHECK_AS(ConfigError, !events.empty(), kOp, ": no training events; expected at least one");
  // Features of the true edges the baseline could select (adjacent layers, outward).
  std::vector<std::pair<double, double>> feats;  // (phi_slope, z0)
  int64_t total = 0;
  for (const auto& event : events) {
    const at::Tensor truth = true_edges(event);
    const Cylindrical c = cylindrical(event);
    const at::Tensor layer_t = event.layer.contiguous();
    const int32_t* layer = layer_t.data_ptr<int32_t>();
    const int64_t m = truth.size(1);
    const int64_t* p = truth.data_ptr<int64_t>();
    total += m;
    for (int64_t e = 0; e < m; ++e) {
      const int64_t a = p[e], b = p[m + e];
      if (layer[b] != layer[a] + 1) continue;
      const PairFeatures f = pair_features(c, a, b);
      if (f.valid) feats.emplace_back(f.phi_slope, f.z0);
    }
  }
  const auto needed = static_cast<int64_t>(std::ceil(target * static_cast<double>(total) - 1e-9));
  HPCML_CHECK_AS(ConfigError, total > 0 && static_cast<int64_t>(feats.size()) >= needed, kOp, ": ", feats.size(),
                 " of ", total, " true edges join adjacent layers; target efficiency ", target,
                 " needs ", needed);
  std::sort(feats.begin(), feats.end());  // by phi_slope
  const auto selectable = static_cast<int64_t>(feats.size());

  BaselineWindows best;
  int64_t best_edges = -1;
  for (int g = 0; g < options.grid; ++g) {
    // The phi-slope window keeps the `keep` smallest phi slopes (from `needed` to all).
    const double q = options.grid == 1 ? 1.0 : static_cast<double>(g) / (options.grid - 1);
    const int64_t keep = needed + static_cast<int64_t>(std::llround(q * static_cast<double>(selectable - needed)));
    if (keep == 0) continue;
    BaselineWindows w;
    w.phi_slope = feats[keep - 1].first;
    // Ties at the window keep more than `keep` edges.
    int64_t kept = keep;
    while (kept < selectable && feats[kept].first <= w.phi_slope) ++kept;
    std::vector<double> z0s;
    z0s.reserve(kept);
    for (int64_t k = 0; k < kept; ++k) z0s.push_back(feats[k].second);
    std::nth_element(z0s.begin(), z0s.begin() + (needed - 1), z0s.end());
    w.z0 = needed > 0 ? z0s[needed - 1] : 0.0;
    int64_t edges = 0;
    for (const auto& event : events) edges += geometric_edges(event, w).size(1);
    if (best_edges < 0 || edges < best_edges) {
      best_edges = edges;
      best = w;
    }
  }
  return best;
}

// --- metrics -----------------------------------------------------------------------------

EdgeMetrics& EdgeMetrics::operator+=(const EdgeMetrics& other) {
  true_edges += other.true_edges;
  selected_edges += other.selected_edges;
  true_selected += other.true_selected;
  return *this;
}

TrackMetrics& TrackMetrics::operator+=(const TrackMetrics& other) {
  particles += other.particles;
  matched_particles += other.matched_particles;
  candidates += other.candidates;
  fake_candidates += other.fake_candidates;
  return *this;
}

EdgeMetrics edge_metrics(const at::Tensor& selected, const at::Tensor& truth) {
  const auto sel = unordered_pairs("selected", selected, /*drop_self_loops=*/false);
  const auto tru = unordered_pairs("truth", truth, /*drop_self_loops=*/true);
  EdgeMetrics m;
  m.true_edges = static_cast<int64_t>(tru.size());
  m.selected_edges = static_cast<int64_t>(sel.size());
  size_t a = 0, b = 0;
  while (a < sel.size() && b < tru.size()) {
    if (sel[a] < tru[b]) {
      ++a;
    } else if (tru[b] < sel[a]) {
      ++b;
    } else {
      ++m.true_selected;
      ++a;
      ++b;
    }
  }
  return m;
}

TrackMetrics track_metrics(const at::Tensor& labels_in, const TrackingEvent& event, const TrackMetricsOptions& options) {
  constexpr const char* kOp = "track_metrics";
  check_event(kOp, event);
  check_tensor(kOp, "labels", labels_in, at::kLong, 1);
  const int64_t n = event.hits.size(0);
  HPCML_CHECK_AS(ConfigError, labels_in.size(0) == n, kOp, ": tensor 'labels' has ", labels_in.size(0),
                 " entries; expected ", n, " (one per hit)");
  check_tensor(kOp, "particles", event.particles, at::kLong, 1);
  check_tensor(kOp, "particle_pt", event.particle_pt, at::kFloat, 1);
  HPCML_CHECK_AS(ConfigError, event.particles.size(0) == event.particle_pt.size(0), kOp, ": tensor 'particle_pt' has ",
                 event.particle_pt.size(0), " entries; expected ", event.particles.size(0), " as 'particles'");
  const at::Tensor labels_t = labels_in.contiguous(), pid_t = event.particle_id.contiguous();
  const int64_t* label = labels_t.data_ptr<int64_t>();
  const int64_t* pid = pid_t.data_ptr<int64_t>();

  struct PairHash {
    size_t operator()(const std::pair<int64_t, int64_t>& p) const {
      return std::hash<int64_t>()(p.first * 1000003 ^ p.second);
    }
  };
  std::unordered_map<int64_t, int64_t> candidate_size, particle_hits;
  std::unordered_map<std::pair<int64_t, int64_t>, int64_t, PairHash> shared;
  for (int64_t i = 0; i < n; ++i) {
    ++candidate_size[label[i]];
    if (pid[i] > 0) {
      ++particle_hits[pid[i]];
      ++shared[{label[i], pid[i]}];
    }
  }
  std::unordered_map<int64_t, bool> particle_matched, candidate_matched;
  for (const auto& [key, count] : shared) {
    const auto [c, p] = key;
    if (2 * count >= candidate_size[c] && 2 * count >= particle_hits[p]) {
      particle_matched[p] = true;
      candidate_matched[c] = true;
    }
  }
  TrackMetrics m;
  const at::Tensor parts_t = event.particles.contiguous(), pt_t = event.particle_pt.contiguous();
  const int64_t* parts = parts_t.data_ptr<int64_t>();
  const float* pt = pt_t.data_ptr<float>();
  for (int64_t k = 0; k < parts_t.size(0); ++k) {
    const auto hits = particle_hits.find(parts[k]);
    const int64_t nh = hits == particle_hits.end() ? 0 : hits->second;
    if (!(pt[k] > options.pt_min) || nh < options.min_particle_hits) continue;
    ++m.particles;
    if (particle_matched.count(parts[k]) != 0) ++m.matched_particles;
  }
  for (const auto& [c, size] : candidate_size) {
    if (size < options.min_candidate_hits) continue;
    ++m.candidates;
    if (candidate_matched.count(c) == 0) ++m.fake_candidates;
  }
  return m;
}

// --- benchmark ---------------------------------------------------------------------------

TrackingBenchResult benchmark_tracking(const TrackingBenchOptions& o) {
  constexpr const char* kOp = "benchmark_tracking";
  HPCML_CHECK_AS(ConfigError, o.cc_nodes > 0 && o.cc_edges >= 0 && o.graph_points > 0 && o.graph_dim > 0 &&
                                  o.graph_events > 0 && o.repeats > 0,
                 kOp, ": sizes must be positive (cc_nodes ", o.cc_nodes, ", cc_edges ", o.cc_edges, ", graph_points ",
                 o.graph_points, ", graph_dim ", o.graph_dim, ", graph_events ", o.graph_events, ", repeats ",
                 o.repeats, ")");
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::mt19937_64 rng(o.seed);
  TrackingBenchResult res;

  // Connected components on a random graph with scores uniform in [0, 1), cut at 0.5.
  at::Tensor edges = at::empty({2, o.cc_edges}, at::kLong);
  at::Tensor scores = at::empty({o.cc_edges}, at::kFloat);
  {
    std::uniform_int_distribution<int64_t> node(0, o.cc_nodes - 1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    int64_t* e = edges.data_ptr<int64_t>();
    float* s = scores.data_ptr<float>();
    for (int64_t k = 0; k < 2 * o.cc_edges; ++k) e[k] = node(rng);
    for (int64_t k = 0; k < o.cc_edges; ++k) s[k] = u(rng);
  }
  res.cc_kokkos_s = res.cc_reference_s = std::numeric_limits<double>::infinity();
  at::Tensor a, b;
  for (int rep = 0; rep < o.repeats; ++rep) {
    auto t0 = Clock::now();
    a = connected_components(o.cc_nodes, edges, scores, /*threshold=*/0.5);
    res.cc_kokkos_s = std::min(res.cc_kokkos_s, seconds(t0));
    t0 = Clock::now();
    b = connected_components_reference(o.cc_nodes, edges, scores, /*threshold=*/0.5);
    res.cc_reference_s = std::min(res.cc_reference_s, seconds(t0));
  }
  HPCML_CHECK(a.equal(b), kOp, ": Kokkos and reference connected components disagree");
  {
    const int64_t* l = a.data_ptr<int64_t>();
    for (int64_t i = 0; i < o.cc_nodes; ++i) res.cc_components += l[i] == i ? 1 : 0;
  }

  // Radius graph on clustered points, like a metric-learning embedding: clusters of 10
  // points (one "particle" each) around centres uniform in the unit cube.
  std::vector<at::Tensor> inputs;
  {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::normal_distribution<float> g(0.0f, 0.02f);
    for (int64_t ev = 0; ev < o.graph_events; ++ev) {
      at::Tensor p = at::empty({o.graph_points, o.graph_dim}, at::kFloat);
      float* x = p.data_ptr<float>();
      std::vector<float> centre(o.graph_dim);
      for (int64_t i = 0; i < o.graph_points; ++i) {
        if (i % 10 == 0) {
          for (auto& v : centre) v = u(rng);
        }
        for (int64_t k = 0; k < o.graph_dim; ++k) x[i * o.graph_dim + k] = centre[k] + g(rng);
      }
      inputs.push_back(p);
    }
  }
  RadiusGraphOptions ro;
  ro.radius = o.graph_radius;
  double best = std::numeric_limits<double>::infinity();
  int64_t edges_total = 0;
  for (int rep = 0; rep < o.repeats; ++rep) {
    edges_total = 0;
    const auto t0 = Clock::now();
    for (const auto& p : inputs) edges_total += radius_graph(p, ro).size(1);
    best = std::min(best, seconds(t0));
  }
  res.graph_events_per_s = static_cast<double>(o.graph_events) / best;
  res.graph_mean_edges = static_cast<double>(edges_total) / static_cast<double>(o.graph_events);
  return res;
}

}  // namespace hpcml::models::tracking
