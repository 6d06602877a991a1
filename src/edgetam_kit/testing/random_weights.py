"""Random-weight models for demos, benchmarks and tests when no checkpoint can be had.

The object-score head gets a large positive bias so masks are not all suppressed as
"no object" (random heads usually say there is none), and BatchNorm statistics are
randomised so the trunk is not an identity-like map. Output of such a model is noise
shaped like segmentation: it must always be labelled as random-weight output.
"""

from __future__ import annotations

import torch

from ..config import EdgeTamConfig, get_config
from ..modeling import EdgeTam


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random running statistics and affine terms (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                mod.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def build_random_model(config: EdgeTamConfig | str = "edgetam", seed: int = 0, video: bool = True) -> EdgeTam:
    """An EdgeTam with seeded random weights (object-score bias +10), with the video modules
    unless ``video=False``. Eval mode, CPU."""
    cfg = get_config(config) if isinstance(config, str) else config
    torch.manual_seed(seed)
    model = EdgeTam(cfg, video=video)
    randomize_(model, seed)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return model.eval()
