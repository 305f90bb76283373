"""The binary image of the reference tables: the same answers as the JSON Lines, refused when it is not the one."""
from __future__ import annotations

import os

import pytest

from core import Index, InvariantError
from datagen.spec_fixture import DATE, load_spec_index
from gateway.app import IMAGE_NAME, load_index
from gateway.config import Config


def answers(ix: Index, names) -> list:
    out = [ix.counts(), ix.memory_bytes()["arena"]]
    for psn in names["psn"].values():
        out.append(ix.get_person(psn))
        out.append(ix.filings_of(psn))
        for inst in names["inst"].values():
            try:
                out.append(ix.eligibility(psn, inst, True, DATE))
            except Exception as err:  # the refusal itself is an answer to compare
                out.append(str(err))
    return out


def test_an_image_answers_exactly_as_the_json_lines(tmp_path):
    ix, names = load_spec_index(tmp_path / "d")
    ix.save_image(str(tmp_path / "i.img"), "fp")
    copy = Index()
    copy.load_image(str(tmp_path / "i.img"), "fp")
    copy.check_invariants()
    assert answers(copy, names) == answers(ix, names)
    copy.put_person(dict(ix.get_person(names["psn"]["retired"]), name="改名"))  # and it keeps working as a table


def test_an_image_that_is_not_the_one_is_refused(tmp_path):
    ix, names = load_spec_index(tmp_path / "d")
    path = str(tmp_path / "i.img")
    ix.save_image(path, "fp")
    with pytest.raises(ValueError, match="fingerprint"):
        Index().load_image(path, "another data set")
    with open(path, "rb") as f:
        blob = f.read()
    for at in (len(blob) // 3, len(blob) - 5):
        damaged = bytearray(blob)
        damaged[at] ^= 0x10
        with open(path, "wb") as f:
            f.write(damaged)
        with pytest.raises(ValueError):
            Index().load_image(path, "fp")
    ix.apply_deltas(names["psn"]["retired"], 2026, {"inpatient_admissions": 1}, 1)
    with pytest.raises(InvariantError):  # an image is a cache of a fresh load, never of runtime state
        ix.save_image(path, "fp")


def test_the_gateway_writes_the_image_once_and_reads_it_until_the_files_change(tmp_path, caplog):
    names = load_spec_index(tmp_path / "d")[1]
    config = Config(data_dir=names["dir"])
    first = load_index(config, names["dir"])
    assert os.path.exists(os.path.join(names["dir"], IMAGE_NAME))
    with caplog.at_level("INFO", logger="yidi.gateway"):
        again = load_index(config, names["dir"])
    assert "from its image" in caplog.text and again.counts() == first.counts()
    with open(os.path.join(names["dir"], "regions.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"admdvs": "650000", "name": "新疆维吾尔自治区"}\n')
    caplog.clear()
    with caplog.at_level("INFO", logger="yidi.gateway"):
        changed = load_index(config, names["dir"])
    assert "not used" in caplog.text and changed.counts()["regions"] == first.counts()["regions"] + 1
