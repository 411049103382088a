"""Sample data: real EM crops to try every widget on in a minute."""

from __future__ import annotations

from pathlib import Path

__all__ = ["vnc_sstem_crop", "lucchi_fibsem_crop", "VNC_CROP"]

#: 20 x 256 x 256 uint8 crop of the Drosophila larval VNC ssTEM stack of Gerhard et al.
#: (2013), CC BY-NC-SA 3.0; see data/README.md.
VNC_CROP = Path(__file__).resolve().parent / "data" / "vnc_sstem_crop.tif"


def vnc_sstem_crop():
    """The shipped Drosophila VNC ssTEM crop (ZYX, 50 x 4.6 x 4.6 nm voxels)."""
    import tifffile

    data = tifffile.imread(VNC_CROP)
    return [(data, {"name": "VNC ssTEM crop", "scale": (50.0, 4.6, 4.6),
                    "metadata": {"voxel_size_nm": (50.0, 4.6, 4.6),
                                 "source": "Gerhard et al. 2013, doi:10.6084/m9.figshare."
                                           "856713, CC BY-NC-SA 3.0"}}, "image")]


def lucchi_fibsem_crop():
    """A 32 x 384 x 384 crop of the Lucchi FIB-SEM volume (5 nm isotropic voxels).

    Not shipped (its source has no licence that allows redistribution): read
    from the shared data folder (``$EMPANADA_DATA_DIR`` or ``../shared/data``).
    """
    import tifffile

    from empanada_core.testing import find_data_dir

    base = find_data_dir()
    path = None if base is None else Path(base) / "lucchi_epfl_hippocampus" / "images.tif"
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "the Lucchi FIB-SEM sample is read from the shared data folder, which was not "
            "found: set EMPANADA_DATA_DIR to the folder holding lucchi_epfl_hippocampus/. "
            "The shipped Drosophila VNC sample works everywhere")
    with tifffile.TiffFile(path) as tif:
        data = tif.asarray(key=range(16, 48))[:, 192:576, 512:896]
    return [(data, {"name": "Lucchi FIB-SEM crop", "scale": (5.0, 5.0, 5.0),
                    "metadata": {"voxel_size_nm": (5.0, 5.0, 5.0),
                                 "source": "Lucchi et al. (EPFL CVLab), research use"}},
             "image")]
