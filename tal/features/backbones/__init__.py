"""Feature backbones by name (`tal.registry.BACKBONES`): torchvision's video models, ResNet-50 and VGG16
per frame, I3D (RGB, RAFT flow, two-stream), C3D, CLIP, the weight-free descriptor, and any backbone a
package registers under the `tal.backbones` entry-point group (a `BackboneEntry`)."""
from tal.features.backbones.base import (
    FRAME_WINDOW, Backbone, BackboneEntry, BackboneSpec, FramePooled, LoadedWeights, Preprocessor, build_backbone,
    get_spec, list_backbones, load_state, load_weights_file, loaded_file, read_state_file, seeded,
)
from tal.features.backbones import torchvision_models, descriptor, i3d, c3d, clip  # noqa: F401  (registration order)
from tal.features.backbones.torchvision_models import weights_file_name
from tal.features.download import weights_cache_dir

__all__ = [
    "FRAME_WINDOW", "Backbone", "BackboneEntry", "BackboneSpec", "FramePooled", "LoadedWeights", "Preprocessor",
    "build_backbone", "get_spec", "list_backbones", "load_state", "load_weights_file", "loaded_file",
    "read_state_file", "seeded", "weights_cache_dir", "weights_file_name",
]
