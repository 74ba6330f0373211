"""``ecgx data download``: fetch a public dataset into ``data/``, resumable and verified.

PhysioNet publishes ``SHA256SUMS.txt`` for every project version, so each file is fetched on its
own (resuming a partial ``.part`` file with an HTTP Range request) and checked against it. wfdb's
``dl_database`` neither resumes nor verifies, hence this small client on urllib.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ecgx.errors import ConfigValueError, EcgxError

log = logging.getLogger(__name__)

PHYSIONET = "https://physionet.org/files"
CHUNK = 1 << 20


class DownloadError(EcgxError, OSError):
    """A file could not be fetched or failed its checksum (names the file)."""


@dataclass(frozen=True)
class PhysioNetProject:
    """A PhysioNet project version; ``include`` keeps the listed paths under these prefixes."""

    slug: str
    version: str
    folder: str
    include: tuple[str, ...] = ()
    note: str = ""

    def url(self, base: str = PHYSIONET) -> str:
        return f"{base.rstrip('/')}/{self.slug}/{self.version}"


@dataclass(frozen=True)
class ManualDownload:
    """A dataset whose publisher requires a step ecgx cannot take for the user."""

    folder: str
    instructions: str


SOURCES: dict[str, PhysioNetProject | ManualDownload] = {
    "ptbxl": PhysioNetProject("ptb-xl", "1.0.3", "ptb-xl", note="about 3 GB, 21,799 records"),
    "cinc2021": PhysioNetProject(
        "challenge-2021",
        "1.0.3",
        "cinc2021",
        include=("training/",),
        note="about 9 GB, 88,253 records from 7 sources",
    ),  # fmt: skip
    "cpsc2018": ManualDownload(
        "cpsc2018",
        "The original CPSC 2018 files are distributed by the organisers "
        "(http://2018.icbeb.org/Challenge.html): download TrainingSet1-3 and REFERENCE.csv, "
        "unpack them into data/cpsc2018/. The same recordings in CinC format come with "
        "`ecgx data download cinc2021` (training/cpsc_2018).",
    ),
    "chapman": ManualDownload(
        "chapman",
        "Chapman-Shaoxing is published on figshare (Zheng et al. 2020, "
        "doi:10.6084/m9.figshare.c.4560497): download ECGDataDenoised.zip and "
        "Diagnostics.xlsx and unpack them into data/chapman/.",
    ),
    "sph": ManualDownload(
        "sph",
        "SPH is published on figshare (Liu et al. 2022, doi:10.6084/m9.figshare.c.5779802): "
        "download records.tar.gz and metadata.csv and unpack them into data/sph/.",
    ),
}


@dataclass
class DownloadReport:
    fetched: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # already present and correct

    def __str__(self) -> str:
        return f"{len(self.fetched)} files fetched, {len(self.verified)} already present"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_sums(text: str) -> dict[str, str]:
    """``<sha256> <path>`` lines -> {path: sha256}."""
    sums = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, path = line.strip().partition(" ")
        path = path.strip().lstrip("*")
        if len(digest) != 64 or not path:
            raise DownloadError(f"SHA256SUMS.txt line {n} is not '<sha256> <path>': {line!r}")
        sums[path] = digest.lower()
    return sums


def _get(url: str, timeout: float, start: int = 0) -> urllib.request.addinfourl:
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(request, timeout=timeout)


def fetch_file(url: str, target: Path, digest: str, timeout: float = 60.0) -> bool:
    """Make ``target`` hold the verified file; returns True when bytes were fetched."""
    if target.is_file() and sha256(target) == digest:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in (1, 2):
        start = part.stat().st_size if part.is_file() else 0
        try:
            with _get(url, timeout, start) as response:
                # A server that ignores Range answers 200 with the whole file: start over.
                mode = "ab" if start and response.status == 206 else "wb"
                with open(part, mode) as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
        except urllib.error.HTTPError as err:
            if err.code == 416 and start:  # the partial file is already complete
                pass
            else:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"{url}: {err} (rerun the command to resume)") from err
        if sha256(part) == digest:
            os.replace(part, target)
            return True
        part.unlink()  # corrupt: one fresh attempt, then give up naming the file
        log.warning("%s: checksum mismatch, fetching again (attempt %d)", target, attempt)
    raise DownloadError(f"{target}: SHA-256 does not match SHA256SUMS.txt after a fresh download")


def download(
    name: str, data_dir: str | Path, base_url: str = PHYSIONET, jobs: int = 4,
    timeout: float = 60.0,
) -> DownloadReport:  # fmt: skip
    """Download dataset ``name`` (a key of :data:`SOURCES`) into ``data_dir/<folder>``."""
    if name not in SOURCES:
        raise ConfigValueError(f"unknown dataset {name!r}: choose from {sorted(SOURCES)}")
    source = SOURCES[name]
    dest = Path(data_dir) / source.folder
    if isinstance(source, ManualDownload):
        raise EcgxError(f"{name} needs a manual step. {source.instructions}")
    base = source.url(base_url)
    try:
        with _get(f"{base}/SHA256SUMS.txt", timeout) as response:
            sums = parse_sums(response.read().decode())
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{base}/SHA256SUMS.txt: {err}") from err
    wanted = {p: d for p, d in sums.items() if not source.include or p.startswith(source.include)}
    if not wanted:
        raise DownloadError(f"{base}/SHA256SUMS.txt lists no file under {source.include}")
    report = DownloadReport()

    def one(item: tuple[str, str]) -> None:
        path, digest = item
        fetched = fetch_file(f"{base}/{path}", dest / path, digest, timeout)
        (report.fetched if fetched else report.verified).append(path)

    # Threads, not processes: the work is waiting on the network.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, sorted(wanted.items())))
    log.info("%s -> %s: %s", name, dest, report)
    return report
