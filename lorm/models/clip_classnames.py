"""Readable class names for the CLIP zero-shot heads (:func:`lorm.models.clip.text_head`) of the KnOTS tasks.

The loaders of :mod:`lorm.data.vision.knots_sets` return :func:`classnames_for` of their class ids as
``ds["classnames"]``; the names are those of the task-vectors/KnOTS prompts (templates:
:data:`lorm.models.clip.CLIP_TEMPLATES`). Torch-free, so that the data loaders import it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The 43 GTSRB class names of the CLIP prompts (data/prompts.md), as used by task-vectors/KnOTS, by ClassId.
GTSRB_CLASSNAMES = [n.strip() for n in (
    "red and white circle 20 kph speed limit | red and white circle 30 kph speed limit | "
    "red and white circle 50 kph speed limit | red and white circle 60 kph speed limit | "
    "red and white circle 70 kph speed limit | red and white circle 80 kph speed limit | "
    "end / de-restriction of 80 kph speed limit | red and white circle 100 kph speed limit | "
    "red and white circle 120 kph speed limit | red and white circle red car and black car no passing | "
    "red and white circle red truck and black car no passing | "
    "red and white triangle road intersection warning | white and yellow diamond priority road | "
    "red and white upside down triangle yield right-of-way | stop | empty red and white circle | "
    "red and white circle no truck entry | red circle with white horizonal stripe no entry | "
    "red and white triangle with exclamation mark warning | "
    "red and white triangle with black left curve approaching warning | "
    "red and white triangle with black right curve approaching warning | "
    "red and white triangle with black double curve approaching warning | "
    "red and white triangle rough / bumpy road warning | "
    "red and white triangle car skidding / slipping warning | "
    "red and white triangle with merging / narrow lanes warning | "
    "red and white triangle with person digging / construction / road work warning | "
    "red and white triangle with traffic light approaching warning | "
    "red and white triangle with person walking warning | "
    "red and white triangle with child and person walking warning | "
    "red and white triangle with bicyle warning | red and white triangle with snowflake / ice warning | "
    "red and white triangle with deer warning | white circle with gray strike bar no speed limit | "
    "blue circle with white right turn arrow mandatory | blue circle with white left turn arrow mandatory | "
    "blue circle with white forward arrow mandatory | "
    "blue circle with white forward or right turn arrow mandatory | "
    "blue circle with white forward or left turn arrow mandatory | "
    "blue circle with white keep right arrow mandatory | blue circle with white keep left arrow mandatory | "
    "blue circle with white arrows indicating a traffic circle | "
    "white circle with gray strike bar indicating no passing for cars has ended | "
    "white circle with gray strike bar indicating no passing for trucks has ended"
).split("|")]  # sic: "horizonal", "bicyle", as in the CLIP prompts

#: EuroSAT folder -> the CLIP/task-vectors class name (the folder name split at capitals otherwise).
EUROSAT_CLIP_NAMES = {
    "AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments", "River": "river", "SeaLake": "lake or sea",
}

#: The class folders of the complete copies in label order (sorted), for the fixed class-name lists below.
DTD_FOLDERS = (
    "banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted fibrous "
    "flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined marbled matted "
    "meshed paisley perforated pitted pleated polka-dotted porous potholed scaly smeared spiralled sprinkled "
    "stained stratified striped studded swirly veined waffled woven wrinkled zigzagged").split()
RESISC45_FOLDERS = (
    "airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland cloud "
    "commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor "
    "industrial_area intersection island lake meadow medium_residential mobile_home_park mountain overpass "
    "palace parking_lot railway railway_station rectangular_farmland river roundabout runway sea_ice ship "
    "snowberg sparse_residential stadium storage_tank tennis_court terrace thermal_power_station "
    "wetland").split()
EUROSAT_FOLDERS = tuple(EUROSAT_CLIP_NAMES)


def classnames_for(name: str, classes: Sequence[str]) -> list[str]:
    """Human-readable class names (label order) from the class ids/folder names a loader returns as "classes".

    mnist/svhn: the digits; gtsrb: :data:`GTSRB_CLASSNAMES` by ClassId (``"00014"`` -> "stop"); eurosat: the
    CLIP/task-vectors names of :data:`EUROSAT_CLIP_NAMES` (unknown folders: split at capitals, lower case);
    dtd/resisc45: underscores to spaces; sun397: the path without its letter level, ``/`` and ``_`` to spaces
    (``/a/abbey`` -> "abbey", ``/a/apartment_building/outdoor`` -> "apartment building outdoor"; the task-vectors
    folder ``a_apartment_building_outdoor`` gives the same); anything else (cars196, ...): unchanged.
    """
    classes = [str(c) for c in classes]
    if name in ("mnist", "svhn"):
        return [str(int(c)) for c in classes]
    if name == "gtsrb":
        return [GTSRB_CLASSNAMES[int(c)] if c.isdigit() and int(c) < len(GTSRB_CLASSNAMES) else c for c in classes]
    if name == "eurosat":
        return [EUROSAT_CLIP_NAMES.get(c) or " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", c)).lower() or c
                for c in classes]
    if name in ("dtd", "resisc45"):
        return [c.replace("_", " ") for c in classes]
    if name == "sun397":
        return [_sun397_readable(c) for c in classes]
    return list(classes)


def _sun397_readable(c: str) -> str:
    parts = [p for p in c.strip().split("/") if p]
    if len(parts) >= 2 and len(parts[0]) == 1:  # official "/a/abbey[/sub]"
        parts = parts[1:]
    elif len(parts) == 1 and re.fullmatch(r"[a-z]_.+", parts[0]) and parts[0][0] == parts[0][2]:
        parts = [parts[0][2:]]  # task-vectors folder "a_abbey"
    return " ".join(parts).replace("_", " ")


#: Fixed human-readable class names per data set, in label order (those of complete copies; the loaders derive
#: the names from the data on disk and return them as ``ds["classnames"]``). SUN397's names come from its
#: ClassName.txt / class folders only (None here); Cars' from the devkit (cars_meta.mat).
CLASSNAMES = {
    "mnist": [str(d) for d in range(10)],
    "svhn": [str(d) for d in range(10)],
    "gtsrb": list(GTSRB_CLASSNAMES),
    "eurosat": classnames_for("eurosat", EUROSAT_FOLDERS),
    "dtd": classnames_for("dtd", DTD_FOLDERS),
    "resisc45": classnames_for("resisc45", RESISC45_FOLDERS),
    "sun397": None,
}


__all__ = ["CLASSNAMES", "EUROSAT_CLIP_NAMES", "GTSRB_CLASSNAMES", "classnames_for"]
