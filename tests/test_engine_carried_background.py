"""The background a loose selection carries, lifted off the moved object
(engine/carried_background.py), on small synthetic pastes: hairs on a smooth gradient
carried onto another one lose their old background and keep themselves; what is solid,
textured, or drawn round by its own edge stays as pasted."""

from __future__ import annotations

import numpy as np
import torch

from magic_server.engine.carried_background import (
    carried_background,
    lift_carried_background,
    loose_on_smooth,
    surrounding_colours,
    without_holes,
)

H = W = 96


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0, 1, H)[:, None, None]
    column = (1 - t) * np.array(top) + t * np.array(bottom)
    return np.repeat(column, W, axis=1)


OLD = gradient((200, 90, 30), (150, 40, 10))  # dark red-orange bokeh
NEW = gradient((90, 130, 60), (120, 150, 70))  # green bokeh


def hairs() -> np.ndarray:
    """A star of thin bright lines round the centre."""
    mask = np.zeros((H, W), bool)
    for angle in np.linspace(0, np.pi, 7, endpoint=False):
        for t in np.linspace(-26, 26, 300):
            y, x = round(48 + t * np.sin(angle)), round(48 + t * np.cos(angle))
            mask[y, x] = True
    return mask


def paste_of(obj: np.ndarray, colour, carried: np.ndarray, selection: np.ndarray):
    """The new place: NEW around, the selection holding `carried` with the object on it."""
    image = NEW.copy()
    image[selection] = carried[selection]
    image[obj] = colour
    return image


def lift(image, selection, surroundings, strength=1.0):
    out = lift_carried_background(tensor(image), torch.from_numpy(
        selection.astype(np.float32))[None, None], tensor(NEW), surroundings, strength)
    return (out[0].permute(1, 2, 0).numpy() * 255).round()


def surroundings_of(carried: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """What surrounded the object where it was: the carried background round the selection."""
    return surrounding_colours(carried.round().astype(np.uint8), selection)


def test_hairs_lose_the_old_background_and_keep_themselves():
    selection = disc(48, 48, 34)
    obj = hairs()
    image = paste_of(obj, (250, 245, 235), OLD, selection)
    got = lift(image, selection, surroundings_of(OLD, selection))
    between = selection & ~_grow(obj, 3)
    # the carried red is gone between the hairs: the green continues (it was 100+ levels off)
    assert np.abs(got[between] - NEW[between]).max(-1).mean() < 6
    assert np.abs(image[between] - NEW[between]).max(-1).mean() > 60
    # the hairs stay bright
    assert got[obj].mean() > 200
    # no step on the outline: inside and just outside the selection alike
    rim_in = selection & ~disc(48, 48, 32)
    rim_out = disc(48, 48, 36) & ~selection
    assert abs(got[rim_in].mean() - got[rim_out].mean()) < 6


def test_a_smooth_solid_object_stays_whole():
    """A smooth blue ball on the bokeh: its own colour and edge keep it out of the background."""
    selection = disc(48, 48, 34)
    ball = disc(48, 48, 18)
    image = paste_of(ball, (40, 60, 200), OLD, selection)
    got = lift(image, selection, surroundings_of(OLD, selection))
    assert np.abs(got[ball] - image[ball]).max() <= 1
    ring = selection & ~disc(48, 48, 24)
    assert np.abs(got[ring] - NEW[ring]).max(-1).mean() < 6


def test_an_outline_on_the_objects_own_edge_and_its_inside_stay():
    """A white cup rim the selection runs along, red like the surroundings inside: nothing of
    the paste changes where no background it carried lies near."""
    selection = disc(48, 48, 30)
    rim = selection & ~disc(48, 48, 26)
    image = NEW.copy()
    image[selection] = (175, 50, 20)  # the object's red body, coloured like the old bokeh
    image[rim] = (245, 240, 230)
    got = lift(image, selection, surroundings_of(OLD, selection))
    assert np.abs(got - image).max() <= 1


def test_a_textured_carried_background_and_no_strength_stay_as_pasted():
    rng = np.random.default_rng(0)
    grass = np.clip(OLD + rng.normal(0, 25, OLD.shape), 0, 255)
    selection = disc(48, 48, 34)
    obj = hairs()
    textured = paste_of(obj, (250, 245, 235), grass, selection)
    assert np.abs(lift(textured, selection, surroundings_of(grass, selection))
                  - textured).max() <= 1
    smooth = paste_of(obj, (250, 245, 235), OLD, selection)
    assert np.abs(lift(smooth, selection, surroundings_of(OLD, selection), strength=0.0)
                  - smooth).max() <= 1


def test_holes_are_filled_but_not_what_lies_outside():
    mask = disc(48, 48, 30) & ~disc(48, 48, 5)
    mask[:, :3] = True  # touches the edge: what lies beyond it is no hole
    filled = without_holes(torch.from_numpy(mask.astype(np.float32))[None, None])[0, 0]
    assert bool(filled[48, 48]) and not bool(filled[5, 48])


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_only_a_lasso_through_smooth_background_counts_as_carrying_it():
    """A lasso round hairs on bokeh: the photo continues across its outline (1). A mask drawn
    on a white shuttle's edge against a white wall, or round a textured object: nothing (0),
    and nothing is lifted (there is no telling that shuttle from that wall)."""
    photo = OLD.copy()
    photo[hairs()] = (250, 245, 235)
    photo = photo.round().astype(np.uint8)
    lasso = disc(48, 48, 34)
    assert loose_on_smooth(photo, lasso) == 1.0
    assert carried_background(photo, lasso).strength == 1.0
    wall = np.full((H, W, 3), 225, np.uint8)
    shuttle = disc(48, 48, 20)
    wall[shuttle] = 250
    assert loose_on_smooth(wall, shuttle) == 0.0
    assert carried_background(wall, shuttle) is None
    rng = np.random.default_rng(1)
    grass = np.clip(OLD + rng.normal(0, 25, OLD.shape), 0, 255).astype(np.uint8)
    assert loose_on_smooth(grass, lasso) == 0.0
