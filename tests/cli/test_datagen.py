"""`hpcml datagen <domain>`: files read back with h5py only, checked against the layout
(docs/data-layout.md), physics sanity, determinism, rank-count independence, and the
difficulty of each task (docs/datasets.md)."""
import glob
import os
import sys
import tempfile
import unittest

import h5py
import numpy as np

from support import SOURCE_DIR, run

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
from jets_baseline import auc  # noqa: E402  (Mann-Whitney, ties by average rank)


def generate(domain, out, *args, ranks=None, timeout=300):
    rc, stdout, stderr, _ = run(["datagen", domain, "-o", out] + [str(a) for a in args], ranks=ranks,
                                timeout=timeout)
    if rc != 0:
        raise AssertionError(f"hpcml datagen {domain} failed ({rc}): {stderr}")
    return stdout


def read_all(path):
    """Every dataset of a file as {name: array} plus root attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        attrs = dict(f.attrs)
    return out, attrs


def as_str(value):
    return value.decode() if isinstance(value, bytes) else str(value)


class DatagenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dirs = {}
        for domain, args in [("tracking", ["--events-per-file", 100, "--files", 2]),
                             ("jets", ["--events-per-file", 500, "--files", 2]),
                             ("gw", ["--events-per-file", 100, "--files", 2]),
                             ("calo", ["--events-per-file", 200, "--files", 2])]:
            d = os.path.join(cls.tmp.name, domain)
            cls.dirs[domain] = d
            generate(domain, d, *args, "--seed", 11)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    # --- the layout -------------------------------------------------------------

    def check_layout(self, path, schema):
        with h5py.File(path, "r") as f:
            self.assertEqual(int(f.attrs["hpcml_layout"]), 1)
            self.assertEqual(as_str(f.attrs["schema"]), schema)
            self.assertGreaterEqual(int(f.attrs["schema_version"]), 1)
            rows = int(f.attrs["rows"])
            self.assertGreater(rows, 0)
            for key in ("generator", "seed", "file_index"):
                self.assertIn(key, f.attrs, f"{path}: root attribute {key}")

            def check_dataset(ds, leading):
                self.assertEqual(ds.shape[0], leading, ds.name)
                self.assertIn("units", ds.attrs, ds.name)
                units = ds.attrs["units"]
                if ds.ndim > 1 and "features" in ds.attrs:
                    features = ds.attrs["features"]
                    self.assertEqual(len(features), ds.shape[-1], ds.name)
                    self.assertIn(len(units), (1, ds.shape[-1]), ds.name)

            for name, obj in f.items():
                if name == "meta":
                    for m in obj.values():
                        self.assertIn("units", m.attrs, m.name)
                elif isinstance(obj, h5py.Dataset):
                    check_dataset(obj, rows)
                else:
                    offsets = obj["offsets"][()]
                    self.assertEqual(offsets.dtype, np.int64)
                    self.assertEqual(offsets.shape, (rows + 1,))
                    self.assertEqual(offsets[0], 0)
                    self.assertTrue(np.all(np.diff(offsets) >= 0), obj.name)
                    for item_name, item in obj.items():
                        if item_name != "offsets":
                            check_dataset(item, offsets[-1])
            return rows

    def test_files_and_layout(self):
        expect = {"tracking": ["tracking-00000.h5", "tracking-00001.h5"],
                  "jets": ["jets-00000.h5", "jets-00001.h5"],
                  "gw": ["gw-00000.h5", "gw-00001.h5"],
                  "calo": ["calo-channels-00000.h5", "calo-channels-00001.h5",
                           "calo-showers-00000.h5", "calo-showers-00001.h5"]}
        for domain, names in expect.items():
            self.assertEqual(sorted(os.listdir(self.dirs[domain])), names)
            for name in names:
                schema = {"calo-channels": "hpcml.calo.channels", "calo-showers": "hpcml.calo.showers"}.get(
                    name.rsplit("-", 1)[0], "hpcml." + domain)
                self.check_layout(os.path.join(self.dirs[domain], name), schema)

    def test_summary_line(self):
        out = generate("jets", os.path.join(self.tmp.name, "summary"), "--events-per-file", 10, "--files", 3)
        self.assertRegex(out, r"hpcml datagen jets: 3 file\(s\), 30 events, [\d.]+ MB in .*, [\d.]+ s")

    def test_bad_options_are_usage_errors(self):
        for args, pattern in [(["jets", "--events-per-file", "0"],
                               r"--events-per-file: expected 1 to 100000000; found 0"),
                              (["gw", "--length", "1000"], r"--length: expected a power of two >= 16; found 1000"),
                              (["jets", "--signal-fraction", "2"], r"--signal-fraction: expected 0 to 1; found 2")]:
            rc, _, err, _ = run(["datagen"] + args[:1] + ["-o", os.path.join(self.tmp.name, "bad")] + args[1:])
            self.assertEqual(rc, 2, err)
            self.assertRegex(err, pattern)

    # --- physics ----------------------------------------------------------------

    def test_tracking_physics(self):
        data, attrs = read_all(os.path.join(self.dirs["tracking"], "tracking-00000.h5"))
        hits, layer, pid = data["hits/values"], data["hits/layer"], data["hits/particle_id"]
        self.assertEqual(hits.dtype, np.float32)
        self.assertEqual(layer.dtype, np.int32)
        self.assertEqual(pid.dtype, np.int64)
        radii = data["meta/layer_radii"]
        r = np.hypot(hits[:, 0], hits[:, 1])
        self.assertLess(np.max(np.abs(r - radii[layer])), 0.01)  # r-phi smearing keeps hits on the cylinder
        self.assertLessEqual(np.max(np.abs(hits[:, 2])), float(data["meta/half_length"][0]) + 5)
        particles = data["particles/values"]
        pt, eta, q, vz = particles[:, 0], particles[:, 1], particles[:, 3], particles[:, 6]
        self.assertGreaterEqual(pt.min(), 0.5 - 1e-4)
        self.assertLessEqual(np.abs(eta).max(), 2.5)
        self.assertEqual(set(np.unique(q)), {-1.0, 1.0})
        self.assertTrue(30 < vz.std() < 70, vz.std())
        # Noise near 10% of true hits; every true hit's particle exists in its event.
        noise = np.mean(pid == 0)
        self.assertTrue(0.05 < noise < 0.15, noise)
        ho, po = data["hits/offsets"], data["particles/offsets"]
        for e in range(0, len(ho) - 1, 10):
            ids = set(data["particles/particle_id"][po[e]:po[e + 1]])
            self.assertTrue(set(pid[ho[e]:ho[e + 1]]) - {0} <= ids)
        # Central tracks cross all 10 layers, one hit each; forward ones leave through the end cap.
        first = pid[ho[0]:ho[1]]
        per_particle = np.bincount(first[first > 0])
        self.assertEqual(per_particle.max(), len(radii))
        self.assertLess(np.median(per_particle[per_particle > 0]), len(radii) + 1)
        self.assertIn("tracking.b_field_T", attrs)

    def jets(self, path_glob):
        labels, jets, n, ptd = [], [], [], []
        for path in sorted(glob.glob(path_glob)):
            data, _ = read_all(path)
            offsets = data["constituents/offsets"]
            v = data["constituents/values"]
            pt = np.hypot(v[:, 1], v[:, 2])
            counts = np.diff(offsets)
            sums = np.add.reduceat(pt, offsets[:-1])
            sums2 = np.add.reduceat(pt ** 2, offsets[:-1])
            labels.append(data["label"])
            jets.append(data["jet"])
            n.append(counts)
            ptd.append(np.sqrt(sums2) / sums)
        return np.concatenate(labels), np.concatenate(jets), np.concatenate(n), np.concatenate(ptd)

    def test_jets_physics(self):
        path = os.path.join(self.dirs["jets"], "jets-00000.h5")
        data, _ = read_all(path)
        self.assertEqual(data["label"].dtype, np.int64)
        self.assertEqual(data["constituents/values"].shape[1], 4)
        self.assertEqual(data["constituents/features"].shape[1], 7)
        label, jet, n, _ = self.jets(os.path.join(self.dirs["jets"], "*.h5"))
        self.assertTrue(np.all((n >= 20) & (n <= 100)), (n.min(), n.max()))
        self.assertLessEqual(np.abs(jet[:, 1]).max(), 2.2)
        self.assertTrue(450 < np.median(jet[:, 0]) < 700, np.median(jet[:, 0]))
        top, qcd = jet[label == 1, 3].mean(), jet[label == 0, 3].mean()
        self.assertTrue(140 < top < 190, top)
        self.assertLess(qcd, top - 30)
        self.assertTrue(140 < np.median(jet[label == 1, 3]) < 185)
        # Features follow from the four-vectors.
        v, feat, offsets = data["constituents/values"], data["constituents/features"], data["constituents/offsets"]
        pt = np.hypot(v[:, 1], v[:, 2])
        eta = np.arcsinh(v[:, 3] / pt)
        phi = np.arctan2(v[:, 2], v[:, 1])
        owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        jet0 = data["jet"]
        dphi = (phi - jet0[owner, 2] + np.pi) % (2 * np.pi) - np.pi
        np.testing.assert_allclose(feat[:, 0], eta - jet0[owner, 1], atol=2e-3)
        np.testing.assert_allclose(feat[:, 1], dphi, atol=2e-3)
        np.testing.assert_allclose(feat[:, 2], np.log(pt), atol=2e-3)
        np.testing.assert_allclose(feat[:, 6], np.hypot(feat[:, 0], feat[:, 1]), atol=1e-4)
        self.assertLessEqual(np.abs(feat[:, 1]).max(), np.pi)
        # The cone is drawn around the parton axis; the reconstructed axis moves a little.
        self.assertLess(np.quantile(feat[:, 6], 0.99), 0.85)

    def test_jets_baseline_auc_is_realistic(self):
        # 20k jets; a logistic regression (quadratic in the standardised jet-level features, so it can
        # use a mass window) on half, AUC on the other half: hard enough that substructure matters.
        d = os.path.join(self.tmp.name, "jets-auc")
        generate("jets", d, "--events-per-file", 10000, "--files", 2, "--seed", 5)
        label, jet, n, ptd = self.jets(os.path.join(d, "*.h5"))
        x = np.stack([jet[:, 3], n, ptd], axis=1).astype(np.float64)
        half = len(label) // 2
        x = (x - x[:half].mean(0)) / x[:half].std(0)
        z = np.hstack([x, x ** 2, x[:, [0]] * x[:, [1]], x[:, [0]] * x[:, [2]], x[:, [1]] * x[:, [2]],
                       np.ones((len(x), 1))])
        y = label.astype(np.float64)
        w = np.zeros(z.shape[1])
        for _ in range(3000):
            p = 1 / (1 + np.exp(-z[:half] @ w))
            w -= 0.5 * z[:half].T @ (p - y[:half]) / half
        value = auc(z[half:] @ w, label[half:])
        print(f"\njets baseline AUC (mass, n_constituents, pT dispersion): {value:.4f}")
        self.assertTrue(0.80 <= value <= 0.95, value)

    def test_gw_physics(self):
        data, attrs = read_all(os.path.join(self.dirs["gw"], "gw-00000.h5"))
        strain, params, snr = data["strain"], data["parameters"], data["snr"]
        self.assertEqual(strain.shape, (100, 2048))
        self.assertEqual(strain.dtype, np.float32)
        self.assertEqual(data["meta/psd"].shape, (1025,))
        self.assertEqual(float(data["meta/sample_rate"][0]), 1024.0)
        self.assertTrue(np.all(data["meta/psd"] > 0))
        with h5py.File(os.path.join(self.dirs["gw"], "gw-00000.h5"), "r") as f:
            names = [as_str(s) for s in f["parameters"].attrs["features"]]
            self.assertEqual(names, ["chirp_mass", "mass_ratio", "distance", "t_c", "phase"])
        for column, key in enumerate(["chirp_mass_M_sun", "mass_ratio", "distance_Mpc", "t_c_s", "phase_rad"]):
            lo, hi = (float(s) for s in as_str(attrs["gw.prior." + key]).split(" ")[0].split(","))
            self.assertTrue(np.all((params[:, column] >= lo - 1e-4) & (params[:, column] <= hi + 1e-4)), key)
        self.assertTrue(np.all(snr > 0))
        self.assertTrue(5 < np.median(snr) < 60, np.median(snr))
        # The stored signal: its norm is the SNR, and strain - signal is white, unit-variance
        # noise uncorrelated with it (matched-filter overlap ~ N(0, 1)).
        signal = data["signal"]
        self.assertEqual(signal.shape, strain.shape)
        np.testing.assert_allclose(np.linalg.norm(signal.astype(np.float64), axis=1), snr, rtol=1e-4)
        noise = (strain - signal).astype(np.float64)
        self.assertTrue(0.85 < noise.var(axis=1).mean() < 1.05, noise.var(axis=1).mean())
        overlap = (noise * signal).sum(axis=1) / snr
        self.assertLess(abs(overlap.mean()), 0.5)
        self.assertTrue(0.6 < overlap.std() < 1.4, overlap.std())
        # Whitened: early (signal-poor) samples have about unit variance.
        early = strain[:, 200:600]
        self.assertTrue(0.8 < early.var() < 1.3, early.var())
        # The chirp is where t_c says: most power of the loudest events just before t_c.
        loud = np.argsort(snr)[-10:]
        for i in loud:
            tc = int(params[i, 3] * 1024)
            self.assertGreater(np.mean(strain[i, tc - 100:tc] ** 2), np.mean(strain[i, 100:300] ** 2))

    def test_calo_physics(self):
        ch, _ = read_all(os.path.join(self.dirs["calo"], "calo-channels-00000.h5"))
        self.assertEqual(ch["inputs"].shape, (200, 15))
        self.assertTrue(np.all(ch["energy"] > 0))
        self.assertTrue(np.all(ch["inputs"][:, :8] >= 0))
        sh, attrs = read_all(os.path.join(self.dirs["calo"], "calo-showers-00000.h5"))
        self.assertEqual(sh["images"].shape, (200, 4, 56, 11))
        self.assertTrue(np.all(sh["images"] >= 0))
        self.assertTrue(np.all(sh["energy"] > 0))
        total = sh["images"].sum(axis=(1, 2, 3))
        self.assertTrue(np.all(total > 0))
        # The raw sum is biased: the visible fraction grows with energy (dead material, leakage).
        frac = total / sh["energy"]
        low, high = frac[sh["energy"] < 5].mean(), frac[sh["energy"] > 30].mean()
        self.assertGreater(high / low, 1.08, (low, high))
        # The shower maximum sits in layers 1-2.
        layers = sh["images"].sum(axis=(2, 3)).sum(0)
        self.assertGreater(layers[1] + layers[2], 0.7 * layers.sum())

    def test_calo_channels_need_a_nonlinear_model(self):
        import torch
        d = os.path.join(self.tmp.name, "calo-reg")
        generate("calo", d, "--events-per-file", 10000, "--files", 1, "--seed", 3)
        data, _ = read_all(os.path.join(d, "calo-channels-00000.h5"))
        x, y = data["inputs"].astype(np.float64), data["energy"].astype(np.float64)
        half = len(y) // 2

        def resolution(pred, truth):
            r = (pred - truth) / truth
            return np.sqrt(np.mean(r[truth > 5] ** 2))

        a = np.hstack([x, np.ones((len(x), 1))])
        w, *_ = np.linalg.lstsq(a[:half], y[:half], rcond=None)
        linear = resolution(a[half:] @ w, y[half:])
        torch.manual_seed(0)
        torch.set_num_threads(1)
        mu, sd = x[:half].mean(0), x[:half].std(0)
        z = torch.tensor((x - mu) / sd, dtype=torch.float32)
        t = torch.tensor(np.log(y), dtype=torch.float32)
        net = torch.nn.Sequential(torch.nn.Linear(15, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 1))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(40):
            perm = torch.randperm(half)
            for i in range(0, half, 256):
                idx = perm[i:i + 256]
                opt.zero_grad()
                loss = ((net(z[idx]).squeeze(1) - t[idx]) ** 2).mean()
                loss.backward()
                opt.step()
        with torch.no_grad():
            mlp = resolution(np.exp(net(z[half:]).squeeze(1).numpy().astype(np.float64)), y[half:])
        print(f"\ncalo channels resolution (E > 5 GeV): linear {linear:.3f}, MLP {mlp:.3f}")
        self.assertLess(mlp, 0.8 * linear)

    # --- determinism ------------------------------------------------------------

    def test_same_seed_same_data_at_any_rank_count(self):
        base = os.path.join(self.tmp.name, "ranks")
        for domain in ("tracking", "jets", "gw", "calo"):
            reference = None
            for ranks in (None, 2, 3):
                d = os.path.join(base, f"{domain}-{ranks}")
                generate(domain, d, "--events-per-file", 20, "--files", 3, "--seed", 11, ranks=ranks)
                files = sorted(os.listdir(d))
                content = [read_all(os.path.join(d, name))[0] for name in files]
                if reference is None:
                    reference = (files, content)
                    continue
                self.assertEqual(files, reference[0])
                for got, want in zip(content, reference[1]):
                    self.assertEqual(sorted(got), sorted(want))
                    for key in want:
                        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{domain} {key} at {ranks} ranks")

    def test_file_split_and_seed(self):
        # Event i depends on (seed, i) only: 1 file of 40 == 2 files of 20; another seed differs.
        one = os.path.join(self.tmp.name, "split-1")
        two = os.path.join(self.tmp.name, "split-2")
        other = os.path.join(self.tmp.name, "split-other")
        generate("jets", one, "--events-per-file", 40, "--files", 1, "--seed", 4)
        generate("jets", two, "--events-per-file", 20, "--files", 2, "--seed", 4)
        generate("jets", other, "--events-per-file", 40, "--files", 1, "--seed", 5)
        a, _ = read_all(os.path.join(one, "jets-00000.h5"))
        b0, _ = read_all(os.path.join(two, "jets-00000.h5"))
        b1, _ = read_all(os.path.join(two, "jets-00001.h5"))
        np.testing.assert_array_equal(a["jet"], np.concatenate([b0["jet"], b1["jet"]]))
        np.testing.assert_array_equal(a["constituents/values"],
                                      np.concatenate([b0["constituents/values"], b1["constituents/values"]]))
        c, _ = read_all(os.path.join(other, "jets-00000.h5"))
        self.assertFalse(np.array_equal(a["jet"], c["jet"]))


if __name__ == "__main__":
    unittest.main()
