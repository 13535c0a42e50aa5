import numpy as np
import pytest
from images import pattern, write_dicom, write_image

from hetcv.errors import HetcvError
from hetcv.image_files import read_image_file, resized

SUFFIX = {
    "png8": ".png",
    "png16": ".png",
    "rgb": ".png",
    "jpeg": ".jpg",
    "tiff": ".tif",
    "dicom": ".dcm",
}


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "tiff", "dicom", "rgb"])
def test_every_format_decodes_to_the_same_picture(tmp_path, kind):
    pixels = pattern(1, 0)
    path = tmp_path / f"image.{ {'png8': 'png', 'png16': 'png', 'rgb': 'png'}.get(kind, kind) }"
    path = path.with_suffix({"jpeg": ".jpg", "tiff": ".tif", "dicom": ".dcm"}.get(kind, ".png"))
    write_image(path, pixels, kind)
    image = resized(read_image_file(path), 24, colour=kind == "rgb")
    grey = image[0] if kind == "rgb" else image
    # The bright top half survives every format (JPEG loses a little).
    assert grey[:12].mean() > 150 and grey[12:].mean() < 60


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    write_dicom(tmp_path / "a.dcm", stored, slope=2.0, intercept=-100.0)
    assert read_image_file(tmp_path / "a.dcm").tolist() == [[-100, 100], [300, 500]]
    write_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME1")
    assert read_image_file(tmp_path / "b.dcm").tolist() == [[300, 200], [100, 0]]
    write_dicom(tmp_path / "c.dcm", stored, window=(150.0, 101.0))
    windowed = read_image_file(tmp_path / "c.dcm")
    # Window 100–200 (centre 150, width 101): below saturates at 0, above at 255 (the file's
    # own window is the display, mapped from its 16-bit output range to 8 bits); 100 sits
    # just inside the lower edge (DICOM's linear VOI function).
    assert windowed.dtype == np.uint8
    assert windowed[0, 0] == 0 and windowed[1, 0] == windowed[1, 1] == 255
    assert 0 <= windowed[0, 1] < 4
    write_dicom(tmp_path / "d.dcm", stored, photometric="MONOCHROME1", window=(150.0, 101.0))
    assert read_image_file(tmp_path / "d.dcm")[0, 0] == 255


def test_a_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    write_image(path, pattern(0, 1), "png8")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(HetcvError, match=f"{path}: cannot read image"):
        read_image_file(path)


def test_a_missing_image_names_the_file(tmp_path):
    with pytest.raises(HetcvError, match="absent.png: image file does not exist"):
        read_image_file(tmp_path / "absent.png")
