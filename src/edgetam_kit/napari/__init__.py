"""napari plugin for edgetam-kit: one dock widget, sample data.

Qt is imported only by ``widget`` (the dock widget and its controls; napari is imported lazily).
The widget's behaviour is split by concern: ``prompts`` (click -> mask), ``edits`` (commit,
clear, undo), ``tasks`` (work in thread workers, through ``runner``); ``state`` holds what it
remembers, ``layers`` the layer glue. ``work`` holds the long-running steps as plain generators
and ``_sample_data`` the sample images, both napari-free. The npe2 manifest is
``edgetam_kit/napari.yaml``.
"""

from ._triton_guard import avoid_triton_llvm_clash

avoid_triton_llvm_clash()  # the napari face is where Mesa's LLVM and triton's meet (see _triton_guard)
