"""Labels drawn on photos: full labels when they fit, numbers and a legend in a crowd."""
from __future__ import annotations

import numpy as np

from face.drawing import draw_faces, labels_collide


def face(box, age=34.2, gender="female", race="White") -> dict:
    return {"box": list(box), "age": age, "gender": gender, "race": race}


def test_one_face_gets_its_full_label_and_the_image_keeps_its_size() -> None:
    image = np.full((300, 400, 3), 128, np.uint8)
    drawn = draw_faces(image, [face((150, 120, 250, 220))])
    assert drawn.shape == image.shape
    assert not np.array_equal(drawn, image)
    # the label plate sits above the box: dark pixels there, untouched grey beside it
    assert drawn[100:118, 152:200].mean() < 100 and (drawn[100:118, 300:390] == 128).all()


def test_crowded_faces_get_numbers_and_a_legend_below() -> None:
    """Seven faces side by side on a 390-px-wide photo, as on a phone: full labels would
    cover each other, so the photo grows a legend strip and the plates shrink to numbers."""
    image = np.full((260, 390, 3), 128, np.uint8)
    faces = [face((10 + 54 * i, 100, 58 + 54 * i, 150), age=30 + i) for i in range(7)]
    drawn = draw_faces(image, faces)
    assert drawn.shape[0] > image.shape[0] and drawn.shape[1] == image.shape[1]
    legend = drawn[image.shape[0]:]
    assert (legend < 100).any() and (legend == 255).mean() > 0.8  # dark text on white
    # number plates are narrow: the photo between two neighbouring faces' plates stays grey
    full = draw_faces(image, faces, legend=False)
    assert full.shape == image.shape
    assert (drawn[:100, :, :] == 128).mean() > (full[:100, :, :] == 128).mean()


def test_labels_collide_checks_plates_against_plates_and_other_faces() -> None:
    boxes = [(0, 50, 40, 90), (100, 50, 140, 90)]
    assert not labels_collide([(0, 30, 40, 50), (100, 30, 140, 50)], boxes)
    assert labels_collide([(0, 30, 120, 50), (100, 30, 140, 50)], boxes)  # plate over plate
    assert labels_collide([(0, 30, 110, 60), (200, 0, 220, 10)], boxes)  # plate over the other face
    assert not labels_collide([(0, 30, 40, 55)], boxes[:1])  # its own box does not count
