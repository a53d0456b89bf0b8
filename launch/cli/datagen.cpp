// `hpcml datagen <domain>`: synthetic physics data sets in hpcml's layout, files spread
// over the ranks (file k on rank k % size), the same bytes of data at any rank count.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "core/error.hpp"
#include "core/limits.hpp"
#include "io/datagen/datagen.hpp"
#include "io/table.hpp"
#include "launch/cli/command.hpp"

namespace hpcml::launch::cli {

namespace {

namespace dg = hpcml::io::datagen;

struct DatagenOptions {
  std::string out;
  int64_t events_per_file = 1000;
  int64_t files = 2;
  uint64_t seed = 1;
  dg::TrackingOptions tracking;
  dg::JetsOptions jets;
  dg::GwOptions gw;
  dg::CaloChannelsOptions channels;
  dg::CaloShowersOptions showers;
  dg::LrOptions lr;
};

template <typename T>
void require(bool ok, const std::string& domain, const std::string& option, const std::string& expected, T found) {
  if (!ok) HPCML_THROW(ConfigError, "datagen ", domain, ": ", option, ": expected ", expected, "; found ", found);
}

// Above any data set a test or a tutorial needs; larger sets are more files.
constexpr int64_t kMaxEventsPerFile = 100'000'000;

// An upper estimate of the bytes one event takes in memory while its file is
// generated (every value counted as 8 bytes).
double bytes_per_event(const std::string& domain, const DatagenOptions& o) {
  if (domain == "tracking") {
    const double layers = static_cast<double>(o.tracking.layer_radii.size());
    const double hits = (o.tracking.mean_particles + 1) * layers * (1 + o.tracking.noise_fraction);
    return hits * 12 * 8 + (o.tracking.mean_particles + 1) * 10 * 8 + 64;
  }
  if (domain == "jets") return 200 * 4 * 8 + 256;                          // up to ~100 constituents, padded
  if (domain == "gw") return static_cast<double>(o.gw.length) * 2 * 8 + 128;  // strain and template
  if (domain == "lr") return 64;
  return 4 * 56 * 11 * 8 + 256;                                           // calo: the shower images
}

void validate(const std::string& domain, const DatagenOptions& o) {
  require(!o.out.empty(), domain, "-o/--output", "a directory", "nothing");
  require(o.events_per_file >= 1 && o.events_per_file <= kMaxEventsPerFile, domain, "--events-per-file",
          "1 to " + std::to_string(kMaxEventsPerFile), o.events_per_file);
  require(o.files >= 1 && o.files <= limits::kMaxFiles, domain, "--files", "1 to " + std::to_string(limits::kMaxFiles),
          o.files);
  if (domain == "tracking") {
    const auto& t = o.tracking;
    require(t.mean_particles >= 0 && t.mean_particles <= 100000, domain, "--mean-particles", "0 to 100000",
            t.mean_particles);
    require(t.noise_fraction >= 0 && t.noise_fraction <= 10, domain, "--noise-fraction", "0 to 10", t.noise_fraction);
    require(t.b_field > 0, domain, "--b-field", "a field > 0 T", t.b_field);
    require(t.pt_min > 0 && t.pt_min < t.pt_max, domain, "--pt-min", "0 < pt-min < " + dg::detail::number(t.pt_max),
            t.pt_min);
  } else if (domain == "jets") {
    const auto& j = o.jets;
    require(j.signal_fraction >= 0 && j.signal_fraction <= 1, domain, "--signal-fraction", "0 to 1",
            j.signal_fraction);
    require(j.pt_min > 50 && j.pt_min < j.pt_max, domain, "--pt-min/--pt-max", "50 < pt-min < pt-max",
            dg::detail::number(j.pt_min) + "/" + dg::detail::number(j.pt_max));
  } else if (domain == "gw") {
    const auto& g = o.gw;
    require(g.length >= 16 && (g.length & (g.length - 1)) == 0, domain, "--length", "a power of two >= 16", g.length);
    require(g.sample_rate >= 64, domain, "--sample-rate", "at least 64 Hz", g.sample_rate);
    const double seconds = static_cast<double>(g.length) / g.sample_rate;
    require(seconds > g.tc_max, domain, "--length/--sample-rate",
            "a segment longer than t_c max = " + dg::detail::number(g.tc_max) + " s", seconds);
    require(g.f_low > 0 && g.f_low < g.sample_rate / 4, domain, "--f-low", "0 < f-low < sample-rate/4", g.f_low);
  } else if (domain == "lr") {
    require(o.lr.mu >= 0 && o.lr.mu <= 1e6, domain, "--mu", "0 to 1e6", o.lr.mu);
    require(o.lr.signal_fraction >= 0 && o.lr.signal_fraction <= 1, domain, "--signal-fraction", "0 to 1",
            o.lr.signal_fraction);
  } else if (domain == "calo") {
    require(o.channels.mean_pileup >= 0 && o.channels.mean_pileup <= 1000, domain, "--pileup", "0 to 1000",
            o.channels.mean_pileup);
    require(o.showers.cell_noise > 0, domain, "--cell-noise", "a noise > 0 GeV", o.showers.cell_noise);
  }
  // A file is generated in memory, then written: it must fit (with the write's copy).
  limits::check_fits_in_memory(2.0 * bytes_per_event(domain, o) * static_cast<double>(o.events_per_file),
                               "one " + domain + " file", "--events-per-file (and the sizes per event)");
}

// Generates file `index` of `domain` into `dir`; returns the paths written.
std::vector<std::string> write_file(const std::string& domain, const DatagenOptions& o, int64_t index) {
  const int64_t first = index * o.events_per_file, n = o.events_per_file;
  // One stream per domain (and kind): event i of the run draws from (stream, i).
  auto stream = [&](uint64_t salt) { return dg::derive_seed(o.seed, salt); };
  std::vector<std::pair<std::string, io::Table>> tables;
  char number[24];
  std::snprintf(number, sizeof number, "%05lld", static_cast<long long>(index));
  if (domain == "tracking") {
    tables.emplace_back("tracking-" + std::string(number), dg::generate_tracking(o.tracking, stream(1), first, n));
  } else if (domain == "jets") {
    tables.emplace_back("jets-" + std::string(number), dg::generate_jets(o.jets, stream(2), first, n));
  } else if (domain == "gw") {
    tables.emplace_back("gw-" + std::string(number), dg::generate_gw(o.gw, stream(3), first, n));
  } else if (domain == "lr") {
    tables.emplace_back("lr-" + std::string(number), dg::generate_lr(o.lr, stream(6), first, n));
  } else {
    tables.emplace_back("calo-channels-" + std::string(number),
                        dg::generate_calo_channels(o.channels, stream(4), first, n));
    tables.emplace_back("calo-showers-" + std::string(number),
                        dg::generate_calo_showers(o.showers, stream(5), first, n));
  }
  std::vector<std::string> paths;
  for (auto& [stem, table] : tables) {
    table.attributes["seed"] = std::to_string(o.seed);
    table.attributes["file_index"] = std::to_string(index);
    table.attributes["files"] = std::to_string(o.files);
    table.attributes["first_event"] = std::to_string(first);
    const std::string path = (std::filesystem::path(o.out) / (stem + ".h5")).string();
    io::write_table(path, table);
    paths.push_back(path);
  }
  return paths;
}

int run_datagen(Context& c, const std::string& domain, const DatagenOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const int rank = c.world->rank(), size = c.world->size();
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (!std::filesystem::is_directory(o.out)) {
    HPCML_THROW(IoError, "datagen ", domain, ": cannot create output directory '", o.out, "': ", ec.message());
  }
  for (int64_t k = rank; k < o.files; k += size) write_file(domain, o, k);
  c.world->barrier()->wait();
  if (rank != 0) return 0;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uintmax_t bytes = 0;
  int64_t written = 0;
  for (const auto& entry : std::filesystem::directory_iterator(o.out)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(domain + "-", 0) == 0 && entry.path().extension() == ".h5") {
      bytes += entry.file_size();
      ++written;
    }
  }
  const int64_t events = o.files * o.events_per_file;
  std::printf("hpcml datagen %s: %lld file(s), %lld events, %.1f MB in %s, %.2f s (%.0f events/s) on %d rank(s)\n",
              domain.c_str(), static_cast<long long>(written), static_cast<long long>(events),
              static_cast<double>(bytes) / 1e6, o.out.c_str(), seconds, static_cast<double>(events) / seconds, size);
  std::fflush(stdout);
  return 0;
}

void add_file_options(CLI::App* d, DatagenOptions& o) {
  d->add_option("-o,--output", o.out, "Output directory (created if missing)")->required();
  d->add_option("--events-per-file", o.events_per_file, "Events per file (default 1000; at most 1e8, and one file must fit in half of the node's memory)");
  d->add_option("--files", o.files, "Number of files; file k is written by rank k % size (default 2)");
  d->add_option("--seed", o.seed, "Run seed; event i draws from (seed, domain, i) (default 1)");
}

}  // namespace

void add_datagen_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand("datagen", "Generate synthetic physics data sets (tracking, jets, gw, calo, lr) as "
                                            "HDF5 files in hpcml's layout, spread over the ranks");
  sub->require_subcommand(1);
  auto options = std::make_shared<DatagenOptions>();
  auto& o = *options;
  auto select = [&selected, options](const std::string& domain) {
    return [&selected, options, domain] {
      validate(domain, *options);
      selected = [options, domain](Context& c) { return run_datagen(c, domain, *options); };
    };
  };

  auto* tracking = sub->add_subcommand("tracking", "Charged particles as helices in a 2 T solenoid through 10 "
                                                   "barrel layers: hits (x, y, z, layer, particle_id) and particles");
  add_file_options(tracking, o);
  add_common_options(tracking, common);
  tracking->add_option("--mean-particles", o.tracking.mean_particles, "Poisson mean of particles per event (100)");
  tracking->add_option("--noise-fraction", o.tracking.noise_fraction, "Noise hits per true hit (0.1)");
  tracking->add_option("--b-field", o.tracking.b_field, "Solenoid field in T (2)");
  tracking->add_option("--pt-min", o.tracking.pt_min, "Lowest particle pT in GeV (0.5; below ~0.35 loopers appear)");
  tracking->callback(select("tracking"));

  auto* jets = sub->add_subcommand("jets", "Boosted top (label 1) vs QCD (label 0) jets: constituents (E, px, py, "
                                           "pz), 7 ParticleNet features, jet (pt, eta, phi, mass)");
  add_file_options(jets, o);
  add_common_options(jets, common);
  jets->add_option("--signal-fraction", o.jets.signal_fraction, "Fraction of top jets (0.5)");
  jets->add_option("--pt-min", o.jets.pt_min, "Lowest parton-level jet pT in GeV (550)");
  jets->add_option("--pt-max", o.jets.pt_max, "Highest parton-level jet pT in GeV (650)");
  jets->callback(select("jets"));

  auto* gw = sub->add_subcommand("gw", "Whitened single-detector strain with inspiral chirps in aLIGO-like noise, "
                                       "with (chirp mass, mass ratio, distance, t_c, phase) and SNR");
  add_file_options(gw, o);
  add_common_options(gw, common);
  gw->add_option("--sample-rate", o.gw.sample_rate, "Samples per second (1024)");
  gw->add_option("--length", o.gw.length, "Samples per event, a power of two (2048)");
  gw->add_option("--f-low", o.gw.f_low, "Low-frequency cut-off of the whitening, Hz (15)");
  gw->callback(select("gw"));

  auto* calo = sub->add_subcommand("calo", "HCAL channel pulses (calo-channels-*.h5: 15 inputs -> energy) and "
                                           "electron showers (calo-showers-*.h5: 4x56x11 images -> energy)");
  add_file_options(calo, o);
  add_common_options(calo, common);
  calo->add_option("--pileup", o.channels.mean_pileup, "Mean pile-up interactions for the channels (30)");
  calo->add_option("--cell-noise", o.showers.cell_noise, "Shower cell noise in GeV, visible (0.002)");
  calo->callback(select("calo"));

  auto* lr = sub->add_subcommand("lr", "Events of two classes whose likelihood ratio is analytic (an interference "
                                       "search in miniature: x = m, cos theta, phi), with the true log r of each "
                                       "event (docs/datasets.md#lr)");
  add_file_options(lr, o);
  add_common_options(lr, common);
  lr->add_option("--mu", o.lr.mu, "Signal strength of class 1: p1 ~ |A_B + sqrt(mu) A_S|^2 (1)");
  lr->add_option("--signal-fraction", o.lr.signal_fraction, "Fraction of class-1 events (0.5)");
  lr->callback(select("lr"));
}

}  // namespace hpcml::launch::cli
