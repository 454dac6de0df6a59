"""`tal features info`: what a feature cache holds and what is wrong with it, without trusting it.

It reads the HDF5 file directly (not through `FeatureCache`, which refuses broken files), so it also
describes truncated, foreign or damaged caches: problems are listed, never raised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tal.features.cache import DIGEST_ATTR, VIDEO_ATTRS, _native, data_digest, open_hdf5, video_id


def inspect_feature_cache(path: str | Path, check_values: bool = True, verify: bool = False) -> dict:
    """Everything `tal features info` reports, as a JSON-ready dict (reads every dataset when
    `check_values`, and compares it with its recorded checksum when `verify`); problems are listed, not
    raised, so it also describes broken or foreign files."""
    import h5py

    path = Path(path)
    with open_hdf5(path) as h5:
        attrs = {k: _native(v) for k, v in h5.attrs.items()}
        report: dict[str, Any] = {
            "path": str(path), "file_size_bytes": path.stat().st_size, "attrs": attrs,
            "num_videos": 0, "feature_dims": [], "total_features": 0, "dtypes": [],
            "fps": [], "stride": [], "window": [],
            "backbone": attrs.get("backbone"), "weights": attrs.get("weights"),
            "duration_source": attrs.get("duration_source"),
        }
        dims, dtypes, fps, strides, windows = set(), set(), set(), set(), set()
        nonfinite, empty, missing_attrs, not_datasets, bad_shape, unreadable = [], [], [], [], [], []
        damaged, unverified = [], []
        for name in h5.keys():
            vid = video_id(name)
            obj = h5.get(name)
            if not isinstance(obj, h5py.Dataset):
                not_datasets.append(vid)
                continue
            report["num_videos"] += 1
            if obj.ndim != 2:
                bad_shape.append(f"{vid} {obj.shape}")
                continue
            t, d = obj.shape
            dims.add(int(d))
            dtypes.add(str(obj.dtype))
            report["total_features"] += int(t)
            if t == 0:
                empty.append(vid)
            if any(k not in obj.attrs for k in VIDEO_ATTRS):
                missing_attrs.append(vid)
            else:
                fps.add(float(obj.attrs["fps"]))
                strides.add(int(obj.attrs["stride"]))
                windows.add(int(obj.attrs["window"]))
            if (check_values or verify) and t:
                try:
                    values = obj[()]
                except OSError:
                    unreadable.append(vid)
                    continue
                if not np.isfinite(values).all():
                    nonfinite.append(vid)
                if verify and DIGEST_ATTR not in obj.attrs:
                    unverified.append(vid)
                elif verify and data_digest(values) != _native(obj.attrs[DIGEST_ATTR]):
                    damaged.append(vid)
    report.update(feature_dims=sorted(dims), dtypes=sorted(dtypes), fps=sorted(fps), stride=sorted(strides),
                  window=sorted(windows))
    missing_file_attrs = [k for k in ("backbone", "tal_version") if k not in attrs]
    checks = [  # (found, what to say): the problems, in the order they are listed
        (missing_file_attrs, f"file attributes missing: {', '.join(missing_file_attrs)}"),
        (missing_attrs, f"{len(missing_attrs)} videos lack fps/stride/window/duration attributes"),
        (not_datasets, f"{len(not_datasets)} root members are groups, not [T, D] datasets"),
        (bad_shape, f"{len(bad_shape)} datasets are not 2-D"),
        (len(dims) > 1, f"feature dimensions differ between videos: {sorted(dims)}"),
        (empty, f"{len(empty)} videos have zero features"),
        (nonfinite, f"{len(nonfinite)} videos contain NaN/Inf"),
        (unreadable, f"{len(unreadable)} videos cannot be read (truncated file)"),
        (damaged, f"{len(damaged)} videos have damaged data (checksum mismatch): re-extract them"),
    ]
    problems = [text for found, text in checks if found]
    report.update(
        values_checked=check_values, problems=problems, missing_file_attrs=missing_file_attrs,
        nonfinite_videos=sorted(nonfinite), empty_videos=sorted(empty), videos_missing_attrs=sorted(missing_attrs),
        groups=sorted(not_datasets), bad_shape=sorted(bad_shape), unreadable_videos=sorted(unreadable),
        verified=verify, damaged_videos=sorted(damaged), unverified_videos=sorted(unverified),
    )
    return report
