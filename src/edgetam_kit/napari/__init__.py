"""napari plugin for edgetam-kit: one dock widget, sample data.

napari, Qt and magicgui are imported only by ``widget`` (the dock widget); ``work`` holds the
long-running steps as plain generators and ``_sample_data`` the sample images, both napari-free.
The npe2 manifest is ``edgetam_kit/napari.yaml``.
"""
