"""Small image files the source tests write themselves: PNG (8/16-bit), JPEG, TIFF, DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(label: int, index: int, size: int = 24) -> np.ndarray:
    """A grey image whose bright half depends on the label, with a little noise."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 40, size=(size, size)).astype(np.float64)
    if label:
        pixels[: size // 2] += 180
    else:
        pixels[size // 2 :] += 180
    return pixels


def write_image(path: Path, pixels: np.ndarray, kind: str) -> None:
    """``kind``: png8, png16, jpeg, tiff, rgb (PNG) or dicom."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png16":
        Image.fromarray((pixels * 200).astype(np.uint16)).save(path)
    elif kind == "rgb":
        grey = pixels.astype(np.uint8)
        Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1)).save(path)
    elif kind == "dicom":
        write_dicom(path, (pixels * 10).astype(np.uint16))
    else:
        Image.fromarray(pixels.astype(np.uint8)).save(path)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
) -> None:
    """A minimal valid DICOM file with 16-bit unsigned grey pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope = slope
    dataset.RescaleIntercept = intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
