"""Builds a zoo model's Python twin and loads its weights from an HDF5 dump
(one dataset per state_dict name, as tests/support/zoo_dump writes).

    from models.twins.load import load_twin
    model = load_twin("facile", "facile.h5").eval()
"""
import h5py
import numpy as np
import torch

from models.twins.deepcalo import DeepCalo
from models.twins.facile import Facile
from models.twins.particlenet import particlenet, particlenet_lite
from models.twins.tracking import TrackingPipeline

TWINS = {"deepcalo": DeepCalo, "facile": Facile, "particlenet": particlenet, "particlenet-lite": particlenet_lite}
# The learned tracking stages (default architecture; models.twins.tracking.load_pipeline reads any).
TWINS["tracking"] = TrackingPipeline


def make_twin(name):
    """A fresh twin of zoo model `name`; ValueError lists the known names."""
    if name not in TWINS:
        raise ValueError(f"model.name: expected one of [{', '.join(sorted(TWINS))}], found '{name}'")
    return TWINS[name]()


def parameter_count(model):
    """Trainable parameter elements, as hpcml::models::parameter_count counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_twin(name, h5_path):
    """The twin of `name` with every parameter and buffer read from `h5_path`.

    Strict: a state_dict name missing from the file, a model dataset in the file
    the twin does not have (names starting "__" are ignored), or a shape mismatch
    raises ValueError naming them. Dtypes follow the twin (float32, int64 counts).
    """
    model = make_twin(name)
    expected = model.state_dict()
    with h5py.File(h5_path, "r") as f:
        found = {k for k in f.keys() if not k.startswith("__")}
        missing = sorted(set(expected) - found)
        extra = sorted(found - set(expected))
        if missing or extra:
            raise ValueError(f"{h5_path}: weights for '{name}' do not match the twin: "
                             f"missing {missing}, unexpected {extra}")
        state = {}
        for key, ref in expected.items():
            data = np.asarray(f[key][()])
            if tuple(data.shape) != tuple(ref.shape):
                raise ValueError(f"{h5_path}: '{key}' has shape {tuple(data.shape)}, "
                                 f"the twin expects {tuple(ref.shape)}")
            state[key] = torch.from_numpy(data).to(ref.dtype)
    model.load_state_dict(state, strict=True)
    return model
