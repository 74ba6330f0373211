"""The CinC 2020/2021 reader and its label mapping, on the real challenge samples."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb
from hydra.utils import instantiate

from ecgx.datasets import cinc_labels
from ecgx.datasets.cinc import CinC, source_of
from ecgx.datasets.cpsc2018 import SNOMED_TO_CLASS, read_reference
from ecgx.datasets.ptbxl import PTBXL
from ecgx.formats.record import LEADS, RecordError
from tests.conftest import PTBXL_SAMPLES, SAMPLES, needs_samples

CINC2020 = SAMPLES / "cinc2020_cpsc"
CINC2021 = SAMPLES / "cinc2021"
TABLES = Path(cinc_labels.__file__).parent / "tables"

# Classes read by hand from the sample headers' #Dx and the official tables.
SCORED_2021 = {
    "JS00001": {"164889003", "713427006", "164934002"},  # AF, RBBB 59118001 -> CRBBB, TAb
    "E00008": {"713426002", "427172004", "39732003", "427084000"},  # VPB 17338001 -> PVC
    "Q0010": {"427172004"},  # PVC; 164865005 (MI) is unscored
    "Q0001": {"427084000"},  # STach; 164867002 (old MI) is unscored
    "HR00008": {"39732003", "426783006"},  # LAD, SR; MI and abQRS unscored
    "JS00005": {"164890007", "270492004"},  # AFL, IAVB; STD, NSSTTA unscored
    "Q0002": set(),  # myocardial ischemia only: no scored class
    "A0005": set(),  # CPSC's PVC is 164884008 (ventricular ectopics), unscored
    "S0008": set(),  # MI only
}
SERESNET17 = {
    "JS00001": {"164889003", "59118001", "164934002"},  # RBBB keeps the refactor's code
    "E00008": {"713426002", "39732003", "427084000"},  # PVC is not one of the 17
    "JS00005": {"164890007", "270492004"},
    "Q0010": set(),
}


def _labels_by_id(reader: CinC, meta: pd.DataFrame | None = None) -> dict[str, set[str]]:
    meta = reader.metadata() if meta is None else meta
    y, names, _ = reader.labels(meta)
    return {rid: {names[j] for j in np.flatnonzero(row)} for rid, row in zip(meta["record_id"], y)}


def _copy_record(hea: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ext in (".hea", ".mat"):
        target = folder / (hea.stem + ext)
        shutil.copyfile(hea.with_suffix(ext), target)
    return folder / hea.name


def _write_val(mat: Path, val: np.ndarray) -> None:
    # MATLAB v4 with a 3-letter name has the 24-byte preamble the headers' "16+24" expects.
    scipy.io.savemat(str(mat), {"val": val}, format="4")


# -- signals -------------------------------------------------------------------------------------
@needs_samples()
@pytest.mark.parametrize("folder", [CINC2020, CINC2021], ids=["cinc2020_cpsc", "cinc2021"])
def test_every_sample_record_equals_wfdb(folder: Path) -> None:
    reader = CinC(folder)
    reader.ensure()
    meta = reader.metadata()
    assert len(meta) == len(list(folder.rglob("*.hea")))
    assert list(meta["path"]) == sorted(meta["path"])
    for _, row in meta.iterrows():
        rec = reader.read(row)
        expected, fields = wfdb.rdsamp(str((folder / row["path"]).with_suffix("")))
        assert rec.fs == fields["fs"] == row["fs"]
        assert rec.signal.shape == (12, fields["sig_len"]) == (12, row["n_samples"])
        assert rec.signal.dtype == np.float32
        assert rec.leads == LEADS == tuple(fields["sig_name"])
        # Same arithmetic as wfdb, so equal to the last bit after the float32 cast.
        np.testing.assert_array_equal(rec.signal, expected.T.astype(np.float32))


@needs_samples()
def test_lengths_and_rates_vary_and_are_kept() -> None:
    meta = CinC(CINC2021).metadata().set_index("record_id")
    assert meta.loc["S0001", ["fs", "n_samples"]].tolist() == [1000.0, 38400]
    assert meta.loc["S0008", ["fs", "n_samples"]].tolist() == [1000.0, 115174]
    assert meta.loc["A0001", ["fs", "n_samples"]].tolist() == [500.0, 7500]
    reader = CinC(CINC2021)
    row = reader.metadata().set_index("record_id", drop=False).loc["S0008"]
    assert reader.read(row).signal.shape == (12, 115174)


@needs_samples(PTBXL_SAMPLES)
@needs_samples(CINC2021)
def test_ptbxl_records_equal_their_challenge_copies() -> None:
    ptbxl = PTBXL(PTBXL_SAMPLES, sampling_rate=500)
    ptb_meta = ptbxl.metadata().set_index("record_id", drop=False)
    cinc = CinC(CINC2021, sources=["PTB-XL"])
    cinc_meta = cinc.metadata().set_index("record_id", drop=False)
    assert len(cinc_meta) == 10
    for ecg_id in range(1, 11):
        ours = cinc.read(cinc_meta.loc[f"HR{ecg_id:05d}"])
        theirs = ptbxl.read(ptb_meta.loc[str(ecg_id)])
        assert ours.fs == theirs.fs == 500
        np.testing.assert_array_equal(ours.signal, theirs.signal)


# -- metadata ------------------------------------------------------------------------------------
@needs_samples()
def test_metadata_reads_demographics_and_sources() -> None:
    meta = CinC(CINC2021).metadata().set_index("record_id")
    assert meta.loc["A0001", ["age", "sex"]].tolist() == [74.0, 0.0]
    assert meta.loc["JS00002", ["age", "sex"]].tolist() == [59.0, 1.0]
    assert np.isnan(meta.loc["E00001", "age"]) and meta.loc["E00001", "sex"] == 1.0  # "NaN"
    assert meta.loc["HR00001", "path"] == "PTB_PTBXL/HR00001.hea"
    assert meta["source"].value_counts().to_dict() == {
        "Chapman-Shaoxing": 10, "Ningbo": 10, "CPSC": 10, "CPSC-Extra": 10, "Georgia": 10,
        "PTB-XL": 10, "PTB": 2,
    }  # fmt: skip
    # The JS samples are JS00001-JS00011 (Chapman-Shaoxing's range) and JS45542-JS45551 (the
    # last Ningbo records): the two sources are told apart though they share a folder here.
    js = meta[meta.index.str.startswith("JS")]
    assert set(js.index[js["source"] == "Ningbo"]) == {f"JS{n}" for n in range(45542, 45552)}
    # The samples sit in the refactor's database folders.
    assert (meta["path"].str.split("/").str[0] == meta["database"]).all()
    assert (meta["patient_id"] == meta.index).all()
    assert meta["database"].value_counts().to_dict() == {
        "ChapmanShaoxing_Ningbo": 20, "CPSC_CPSC-Extra": 20, "G12EC": 10, "PTB_PTBXL": 12,
    }  # fmt: skip


def test_source_by_prefix() -> None:
    names = {"A0001": "CPSC", "Q0012": "CPSC-Extra", "I0001": "INCART", "S0549": "PTB",
             "HR21837": "PTB-XL", "E10344": "Georgia", "JS00001": "Chapman-Shaoxing",
             "JS10646": "Chapman-Shaoxing", "JS10647": "Ningbo", "JS45551": "Ningbo",
             "X0001": "other", "00001_hr": "other"}  # fmt: skip
    assert {name: source_of(name) for name in names} == names


@needs_samples()
def test_sources_filter_the_records() -> None:
    reader = CinC(CINC2021, sources=["PTB", "Georgia"])
    meta = reader.metadata()
    assert sorted(set(meta["source"])) == ["Georgia", "PTB"]
    assert len(meta) == 12
    ningbo = CinC(CINC2021, sources=["Ningbo"]).metadata()
    assert len(ningbo) == 10 and set(ningbo["source"]) == {"Ningbo"}
    both = CinC(CINC2021, sources="Chapman-Shaoxing/Ningbo").metadata()  # the old joint name
    assert sorted(set(both["source"])) == ["Chapman-Shaoxing", "Ningbo"] and len(both) == 20
    assert reader.signal_spec()["sources"] == ["Georgia", "PTB"]
    assert CinC(CINC2021).signal_spec()["sources"] is None
    with pytest.raises(FileNotFoundError, match="INCART"):
        CinC(CINC2021, sources=["INCART"]).ensure()


# -- labels --------------------------------------------------------------------------------------
@needs_samples()
def test_scored_labels_match_hand_reading() -> None:
    for edition in (2020, 2021):
        got = _labels_by_id(CinC(CINC2021, edition=edition))
        for rid, classes in SCORED_2021.items():
            assert got[rid] == classes, (edition, rid)
    got = _labels_by_id(CinC(CINC2021, classes="seresnet17"))
    for rid, classes in SERESNET17.items():
        assert got[rid] == classes, rid


@needs_samples()
def test_unlabelled_records_are_masked_not_errors() -> None:
    reader = CinC(CINC2021)
    meta = reader.metadata()
    _, _, keep = reader.labels(meta)
    masked = set(meta["record_id"][~keep])
    assert {"Q0002", "A0005", "S0008"} <= masked
    assert not {"JS00001", "E00008"} & masked
    # "all" knows every code of the mapping tables: unscored diagnoses become classes too.
    got = _labels_by_id(CinC(CINC2021, classes="all"), meta)
    assert got["Q0002"] == {"164861001"} and got["A0005"] == {"164884008"}


@needs_samples()
def test_cpsc_abbreviations_give_the_snomed_labels() -> None:
    old = CinC(CINC2020).metadata().set_index("record_id")
    new = CinC(CINC2021, sources=["CPSC"]).metadata().set_index("record_id")
    assert len(new) == 10
    for rid in new.index:
        assert old.loc[rid, "labels"] == new.loc[rid, "labels"], rid
    assert old.loc["A0043", "labels"] == {"164889003": 1.0, "59118001": 1.0}  # "AF,RBBB"


@needs_samples()
def test_cpsc_copies_agree_on_signals() -> None:
    old, new = CinC(CINC2020), CinC(CINC2021, sources=["CPSC"])
    old_meta = old.metadata().set_index("record_id", drop=False)
    for _, row in new.metadata().iterrows():
        np.testing.assert_array_equal(
            new.read(row).signal, old.read(old_meta.loc[row["record_id"]]).signal
        )


@needs_samples()
def test_cinc2020_cpsc_dx_equals_cpsc2018_reference() -> None:
    # The CinC copy keeps CPSC 2018's numbering: A0001 is REFERENCE.csv's A0001.
    reference = read_reference(SAMPLES / "cpsc2018" / "REFERENCE.csv")
    meta = CinC(CINC2020).metadata()
    assert len(meta) == 100
    for rid, labels in zip(meta["record_id"], meta["labels"]):
        assert {SNOMED_TO_CLASS[code] for code in labels} == set(reference[rid]), rid


def test_parse_dx() -> None:
    assert cinc_labels.parse_dx("AF,RBBB") == ["164889003", "59118001"]
    assert cinc_labels.parse_dx(" I-AVB ") == ["270492004"]
    # Duplicates, a trailing comma and a doubled one occur in real headers.
    assert cinc_labels.parse_dx("284470004,426783006,,284470004,") == ["284470004", "426783006"]
    assert cinc_labels.parse_dx("") == []
    assert cinc_labels.parse_dx("Unknown") == ["Unknown"]


def test_class_counts_and_orders() -> None:
    counts = {(2020, "scored"): 24, (2021, "scored"): 26, (2020, "seresnet17"): 17,
              (2021, "seresnet17"): 17, (2020, "all"): 108, (2021, "all"): 129}  # fmt: skip
    for (edition, task), n in counts.items():
        names, _ = cinc_labels.class_map(edition, task)
        assert len(names) == len(set(names)) == n, (edition, task)
    names, _ = cinc_labels.class_map(2020, "scored")
    assert names == sorted(names) and names[0] == "10370003" and names[-1] == "713427006"
    names, _ = cinc_labels.class_map(2021, "seresnet17")
    assert names[:3] == ["426783006", "426177001", "164934002"] and names[-1] == "284470004"
    assert len(cinc_labels.scored_codes(2020)) == 27 and len(cinc_labels.scored_codes(2021)) == 30


def test_equivalent_codes_are_merged_not_lost() -> None:
    merged = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004"}
    for edition in (2020, 2021):
        names, mapping = cinc_labels.class_map(edition, "scored")
        for code, target in merged.items():
            assert mapping[code] == target and target in names and code not in names
    _, mapping = cinc_labels.class_map(2021, "scored")
    assert mapping["164909002"] == "733534002"  # LBBB | CLBBB
    _, mapping = cinc_labels.class_map(2021, "seresnet17")
    assert mapping["713427006"] == "59118001" and mapping["733534002"] == "164909002"
    assert mapping["63593006"] == "284470004" and mapping["164947007"] == "270492004"
    # Through the reader: one record per member of each pair, each lands in its class.
    reader = CinC("unused", edition=2021)
    codes = ["59118001", "713427006", "164909002", "733534002", "284470004", "63593006",
             "427172004", "17338001", "999999999"]  # fmt: skip
    meta = pd.DataFrame({"record_id": codes, "labels": [{c: 1.0} for c in codes]})
    got = _labels_by_id(reader, meta)
    assert [got[c] for c in codes] == [{"713427006"}] * 2 + [{"733534002"}] * 2 + [
        {"284470004"}
    ] * 2 + [{"427172004"}] * 2 + [set()]


def test_groups_equal_the_tables_notes() -> None:
    for edition in (2020, 2021):
        with open(TABLES / f"cinc{edition}" / "dx_mapping_scored.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        notes = {
            frozenset(re.findall(r"\d+", row[-1])) for row in rows if "same diagnosis" in row[-1]
        }
        groups = {frozenset(g) for g in cinc_labels.equivalent_groups(edition)}
        assert groups == notes and len(groups) == {2020: 3, 2021: 4}[edition]


def test_challenge_weights_follow_the_class_order() -> None:
    for edition in (2020, 2021):
        names, _ = cinc_labels.class_map(edition, "scored")
        w = cinc_labels.challenge_weights(edition, names)
        assert w.shape == (len(names), len(names))
        np.testing.assert_array_equal(np.diag(w), 1.0)
        np.testing.assert_array_equal(w, w.T)
        assert (w[~np.eye(len(names), dtype=bool)] < 1).all()  # merged pairs leave no 1s
        flipped = cinc_labels.challenge_weights(edition, names[::-1])
        np.testing.assert_array_equal(flipped, w[::-1, ::-1])
    # Members of a pair are the same diagnosis to the metric.
    np.testing.assert_array_equal(
        cinc_labels.challenge_weights(2020, ["713427006", "59118001"]), np.ones((2, 2))
    )
    assert cinc_labels.challenge_weights(2021, ["164889003", "164890007"])[0, 1] == 0.5
    with pytest.raises(ValueError, match="164884008"):
        cinc_labels.challenge_weights(2021, ["164884008"])


# -- quirks and broken files ---------------------------------------------------------------------
@needs_samples()
def test_georgia_gain_quirk_is_fixed(tmp_path: Path) -> None:
    hea = _copy_record(CINC2021 / "G12EC" / "E00002.hea", tmp_path / "g")
    original = CinC(tmp_path).read(CinC(tmp_path).metadata().iloc[0]).signal
    hea.write_text(hea.read_text().replace(" 1000/mV ", " 4880/mV "))
    fixed = CinC(tmp_path).read(CinC(tmp_path).metadata().iloc[0]).signal
    np.testing.assert_array_equal(fixed, original)
    raw = CinC(tmp_path, fix_quirks=False)
    as_written = raw.read(raw.metadata().iloc[0]).signal
    expected, _ = wfdb.rdsamp(str(hea.with_suffix("")))
    np.testing.assert_array_equal(as_written, expected.T.astype(np.float32))
    np.testing.assert_allclose(as_written * 4.88, original, rtol=1e-6, atol=1e-6)
    assert CinC(tmp_path).signal_spec() != raw.signal_spec()


@needs_samples()
def test_broken_records_are_clear_errors(tmp_path: Path) -> None:
    src = CINC2021 / "G12EC" / "E00002.hea"
    val = scipy.io.loadmat(str(src.with_suffix(".mat")))["val"]

    def reader_for(name: str, damage) -> CinC:
        hea = _copy_record(src, tmp_path / name)
        damage(hea, hea.with_suffix(".mat"))
        return CinC(tmp_path / name)

    cases = {
        "truncated": (
            lambda h, m: m.write_bytes(m.read_bytes()[:5000]),
            r"E00002\.mat: unreadable MATLAB file",
        ),
        "binary_header": (
            lambda h, m: h.write_bytes(m.read_bytes()[:600]),
            r"E00002\.hea: not a text header",
        ),
        "eleven_leads_header": (
            lambda h, m: h.write_text(
                "\n".join(
                    line.replace(" 12 500 ", " 11 500 ")
                    for line in h.read_text().splitlines()
                    if not line.endswith(" V6")
                )
            ),
            r"E00002\.hea: 11 leads, expected 12",
        ),
        "eleven_leads_mat": (
            lambda h, m: _write_val(m, val[:11]),
            r"E00002\.mat: 'val' is \(11, 5000\)",
        ),
        "nan": (
            lambda h, m: _write_val(m, np.where(np.arange(5000) == 7, np.nan, val * 1.0)),
            r"E00002\.mat: 12 NaN/Inf samples",
        ),
        "invalid_sample": (
            lambda h, m: _write_val(m, np.where(np.arange(5000) == 7, -32768, val)),
            r"E00002\.mat: 12 samples hold WFDB's invalid value",
        ),
        "missing_mat": (lambda h, m: m.unlink(), r"E00002\.mat: signal file missing"),
        "unknown_lead": (
            lambda h, m: h.write_text(h.read_text().replace(" V6\n", " V7\n")),
            r"E00002\.hea: non-standard lead name 'V7'",
        ),
        "gain_zero": (  # WFDB would read 0 as 200 adu/mV: every value 5x too big
            lambda h, m: h.write_text(h.read_text().replace("1000/mV 16 0 -48", "0/mV 16 0 -48")),
            r"E00002\.hea: ADC gain 0 for lead\(s\) \['II'\]",
        ),
        "other_mat": (  # another record's signal file, present beside it
            lambda h, m: (
                shutil.copyfile(CINC2021 / "G12EC" / "E00001.mat", m.with_name("E00001.mat")),
                h.write_text(h.read_text().replace("E00002.mat", "E00001.mat")),
            ),
            r"E00002\.hea: the header names data file 'E00001\.mat', not E00002\.mat",
        ),
    }
    for name, (damage, message) in cases.items():
        reader = reader_for(name, damage)
        meta = reader.metadata()  # a damaged record still gets its row...
        assert list(meta["record_id"]) == ["E00002"], name
        with pytest.raises(RecordError, match=message):  # ...and reading it names the file
            reader.read(meta.iloc[0])
    # The unreadable header leaves a row without labels, so the task drops it.
    broken = CinC(tmp_path / "binary_header")
    assert not broken.labels(broken.metadata())[2].any()


def test_bad_arguments_name_the_key() -> None:
    with pytest.raises(ValueError, match="dataset.edition"):
        CinC("x", edition=2019)
    with pytest.raises(ValueError, match="dataset.classes"):
        CinC("x", classes="scored27")
    with pytest.raises(ValueError, match="dataset.sources.*Georgia"):
        CinC("x", sources=["Atlanta"])


def test_missing_or_empty_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        CinC(tmp_path / "does-not-exist").ensure()
    with pytest.raises(FileNotFoundError, match="no CinC records"):
        CinC(tmp_path).ensure()


@needs_samples()
def test_a_record_found_twice_is_a_config_error(tmp_path: Path) -> None:
    _copy_record(CINC2020 / "A0001.hea", tmp_path / "cinc2020")
    _copy_record(CINC2021 / "CPSC_CPSC-Extra" / "A0001.hea", tmp_path / "cinc2021")
    with pytest.raises(ValueError, match="A0001 twice"):
        CinC(tmp_path).metadata()


# -- config --------------------------------------------------------------------------------------
@needs_samples()
@pytest.mark.parametrize(
    ("name", "root", "n", "n_classes"),
    [("cinc2021", CINC2021, 62, 26), ("cinc2020", CINC2020, 100, 24)],
)
def test_config_builds_a_working_reader(compose_train, name, root, n, n_classes) -> None:
    cfg = compose_train(f"dataset={name}", f"dataset.root={root}")
    reader = instantiate(cfg.dataset)
    assert isinstance(reader, CinC)
    reader.ensure()
    meta = reader.metadata()
    assert len(meta) == n
    rec = reader.read(meta.iloc[0])
    assert rec.signal.shape == (12, meta.iloc[0]["n_samples"])
    assert len(reader.labels(meta)[1]) == n_classes


@needs_samples()
def test_leave_source_out_holds_out_ningbo_alone(compose_train) -> None:
    # split=leave_source_out groups by `source` (8 CinC 2021 sources); the refactor's 5
    # databases stay reachable as split.column=database.
    cfg = compose_train("dataset=cinc2021", f"dataset.root={CINC2021}",
                        "split=leave_source_out", "split.test_source=Ningbo")  # fmt: skip
    reader = instantiate(cfg.dataset)
    meta = reader.metadata()
    y, _, _ = reader.labels(meta)
    parts = instantiate(cfg.split)(meta, y)
    test_ids = set(meta["record_id"].iloc[parts["test"]])
    assert test_ids == {f"JS{n}" for n in range(45542, 45552)}
    rest = meta["source"].iloc[np.concatenate([parts["train"], parts["val"]])]
    assert "Chapman-Shaoxing" in set(rest) and "Ningbo" not in set(rest)


@needs_samples()
def test_a_record_100_times_the_usual_length_is_read_whole(tmp_path: Path) -> None:
    # CinC sources differ in length by design (INCART: 30 min, 92x the 10 s norm), so a long
    # record is no fault: it is read whole and exactly, as wfdb reads it.
    src = CINC2021 / "G12EC" / "E00002.hea"
    hea = _copy_record(src, tmp_path / "long")
    val = scipy.io.loadmat(str(src.with_suffix(".mat")))["val"]
    _write_val(hea.with_suffix(".mat"), np.tile(val, (1, 100)))
    hea.write_text(hea.read_text().replace(" 12 500 5000 ", " 12 500 500000 ", 1))
    reader = CinC(tmp_path / "long")
    signal = reader.read(reader.metadata().iloc[0]).signal
    expected, _ = wfdb.rdsamp(str(hea.with_suffix("")))
    assert signal.shape == (12, 500_000)
    np.testing.assert_array_equal(signal, expected.T.astype(np.float32))
