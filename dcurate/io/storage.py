"""Paths that may be object-store URIs: local files, ``s3://bucket/key``, ``gs://bucket/key``,
``hf://...`` and any other protocol an installed fsspec file system serves (read-only).

The layer through which dcurate reads and writes object storage (inputs, OUT and the work folder,
models). Every function takes a path or URI; a *folder* URI means its key prefix plus ``/``
(``s3://b/out`` and ``s3://b/out2`` are different folders), exactly as local folders are.

* reading: :func:`open_input` (random access, for Parquet footers and row groups), :func:`read_bytes`
* metadata: :func:`exists`, :func:`size`, :func:`list_files` (a folder, recursively), :func:`glob`
* inputs: :func:`expand_input` resolves one input item (an object, a folder prefix or a glob) into
  data files with their output stems, sizes and mtimes, by the rules of local inputs
* writing: :func:`publish` (atomic: the object or file appears complete or not at all),
  :func:`create_exclusive` (create only if absent: the output folder's lock), :func:`remove`,
  :func:`remove_tree`

Libraries, and why. Reads, listings and metadata go through ``pyarrow.fs`` (already a dependency):
its S3 client is native code with parallel ranged reads that Parquet readers use directly, and its
listings page without Python in the loop. Writes to S3 go through ``boto3`` (the ``s3`` extra), because
correctness needs two things ``pyarrow.fs`` does not expose: a multipart upload that is *aborted*
when the writer fails (pyarrow's output stream completes the upload when it is closed or garbage
collected, so an exception mid-shard would publish a truncated object under its final key), and a
conditional ``PutObject`` with ``If-None-Match: *`` for the lock. ``fsspec``/``s3fs`` would do
both but adds an async stack with its own pinned botocore, and reads slower than pyarrow's.
``gs://`` (and ``gcs://``) is read through ``pyarrow.fs.GcsFileSystem`` (in pyarrow's wheels, the same
native ranged reads). Every other scheme (``hf://`` from ``huggingface_hub``, ``az://``, a company's
own file system, ...) goes through the fsspec file system registered for it, wrapped as a pyarrow
file system (``PyFileSystem(FSSpecHandler(...))``), so readers see one interface. Only local paths
and ``s3://`` can be *written*: a run's output folder needs an atomic publish and a conditional
create (the lock), which dcurate implements for S3 only; other URIs are read-only
(:data:`dcurate.core.paths.WRITABLE_SCHEMES`).

Atomic publish. Local: a temporary file beside the target (``.NAME.tmp-PID``), ``fsync``,
``os.replace``, then ``fsync`` of the folder. S3: parts are uploaded as they fill
(``part_size``, default 16 MiB) and the object appears only when ``CompleteMultipartUpload``
succeeds on a clean close; an error aborts the upload, and a killed process leaves only an
incomplete upload, which is invisible to readers and listings (a bucket lifecycle rule
``AbortIncompleteMultipartUpload`` reclaims its parts). Objects smaller than one part are one
``PutObject``, atomic by nature.

Credentials and endpoint: the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``/``AWS_REGION``,
``AWS_PROFILE`` and the files it names), overridden by ``storage_options`` (the recipe key; Ray tasks receive it as JSON in
``DCURATE_STORAGE_OPTIONS``): ``endpoint_url``, ``region``, ``access_key``, ``secret_key``,
``session_token``, ``part_size``; a key naming a scheme (``gs``, ``hf``, any fsspec protocol) holds
a mapping of that file system's own constructor options (``gs: {anonymous: true, endpoint_override:
...}``, ``hf: {token: ...}``). The region defaults to ``us-east-1`` and is never
looked up, and EC2 instance-metadata lookups are switched off, so no request leaves the configured
endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from dcurate.core.errors import DcurateError, InputError
from dcurate.core.paths import WRITABLE_SCHEMES
from dcurate.io.names import detect_format, is_data_file

#: Keys of ``storage_options`` for S3 (anything else is an error, so typos do not pass silently,
#: except a scheme's name holding a mapping: that file system's own options).
OPTION_KEYS = ("endpoint_url", "region", "access_key", "secret_key", "session_token", "part_size")
#: Schemes served by pyarrow's native GCS client (options: ``pyarrow.fs.GcsFileSystem``'s).
GCS_SCHEMES = ("gs", "gcs")
#: The package to install for a scheme whose fsspec file system is missing.
_FSSPEC_PACKAGES = {"hf": "huggingface_hub", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "http": "aiohttp",
                    "https": "aiohttp", "oci": "ocifs", "webdav": "webdav4", "sftp": "paramiko", "ssh": "paramiko"}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*\Z")
DEFAULT_PART_SIZE = 16 * 1024 * 1024
_MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last


class StorageError(DcurateError):
    """A storage operation failed; the message names the path."""


def is_uri(path: str) -> bool:
    """True for ``s3://...`` (and other ``scheme://`` URIs); False for local paths and ``file://``."""
    scheme = urlparse(str(path)).scheme
    return len(scheme) > 1 and scheme != "file"


def scheme(path: str) -> str:
    """The URI's scheme in lower case (``s3``, ``gs``, ``hf``, ...); "" for local paths and ``file://``."""
    return urlparse(str(path)).scheme.lower() if is_uri(path) else ""


def writable(path: str) -> bool:
    """True when dcurate can write ``path``: a local path or an ``s3://`` URI."""
    return not is_uri(path) or scheme(path) in WRITABLE_SCHEMES


def _check_writable(path: str) -> None:
    if not writable(path):
        raise StorageError(f"{path}: cannot write to {scheme(path)}:// (dcurate writes local paths and "
                           f"{', '.join(s + '://' for s in WRITABLE_SCHEMES)} only; {scheme(path)}:// is read-only)")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _split_s3(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3":
        raise StorageError(f"{uri}: unsupported storage scheme '{u.scheme}://' (supported: local paths, s3://)")
    if not u.netloc:
        raise StorageError(f"{uri}: no bucket in the URI")
    return u.netloc, u.path.lstrip("/")


# .. options and clients ...........................................................................

def resolve_options(storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DCURATE_STORAGE_OPTIONS`` (JSON) updated by ``storage_options``, checked."""
    opts: dict[str, Any] = {}
    env = os.environ.get("DCURATE_STORAGE_OPTIONS")
    if env:
        try:
            opts.update(json.loads(env))
        except ValueError:
            raise StorageError("DCURATE_STORAGE_OPTIONS is not valid JSON") from None
    opts.update(storage_options or {})
    unknown = sorted(k for k in set(opts) - set(OPTION_KEYS)
                     if not (isinstance(opts[k], dict) and _SCHEME.match(str(k)) and k not in ("file", "s3")))
    if unknown:
        raise StorageError(f"storage_options: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(OPTION_KEYS)} "
                           "(for s3://, at the top level), or a scheme (gs, hf, ...) holding a mapping of its "
                           "file system's options")
    return opts


def _settings(opts: dict[str, Any]) -> dict[str, Any]:
    """The effective S3 settings: options over the AWS variables, region never looked up."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    region = opts.get("region") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return {
        "endpoint_url": opts.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL") or None,
        "region": region,
        "access_key": opts.get("access_key"),
        "secret_key": opts.get("secret_key"),
        "session_token": opts.get("session_token"),
    }


def _frozen(opts: dict[str, Any]) -> tuple:
    """Hashable settings: the key of the cached clients."""
    return tuple(sorted((k, None if v is None else str(v)) for k, v in _settings(opts).items()))


@functools.lru_cache(maxsize=8)
def _pyarrow_s3(key: tuple) -> pafs.S3FileSystem:
    s = dict(key)
    kwargs: dict[str, Any] = {"region": s["region"], "allow_bucket_creation": False, "allow_bucket_deletion": False}
    if s["endpoint_url"]:
        u = urlparse(s["endpoint_url"])
        kwargs["endpoint_override"] = u.netloc or u.path
        kwargs["scheme"] = u.scheme or "https"
    if s["access_key"]:
        kwargs["access_key"] = s["access_key"]
        kwargs["secret_key"] = s["secret_key"]
        if s["session_token"]:
            kwargs["session_token"] = s["session_token"]
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=8)
def _boto3_s3(key: tuple) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("writing to s3:// needs boto3: pip install 'dcurate[s3]'") from None
    s = dict(key)
    return boto3.session.Session().client(
        "s3", endpoint_url=s["endpoint_url"], region_name=s["region"], aws_access_key_id=s["access_key"],
        aws_secret_access_key=s["secret_key"], aws_session_token=s["session_token"],
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def _scheme_options(opts: dict[str, Any], sch: str) -> str:
    """The options of scheme ``sch`` (``gs`` and ``gcs`` share theirs), as sorted JSON: a cache key."""
    sub = opts.get(sch)
    if sub is None and sch in GCS_SCHEMES:
        sub = opts.get("gs") or opts.get("gcs")
    return json.dumps(sub or {}, sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _pyarrow_gcs(options: str) -> pafs.GcsFileSystem:
    try:
        return pafs.GcsFileSystem(**json.loads(options))
    except (TypeError, ValueError) as e:
        raise StorageError(f"storage_options for gs://: {e} (the keys are pyarrow.fs.GcsFileSystem's: "
                           "anonymous, endpoint_override, scheme, project_id, access_token, ...)") from None


@functools.lru_cache(maxsize=16)
def _fsspec(sch: str, options: str) -> tuple[Any, pafs.FileSystem]:
    """The fsspec file system of ``sch`` and its pyarrow wrapper."""
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"reading {sch}:// needs fsspec: pip install fsspec"
                           + (f" {_FSSPEC_PACKAGES[sch]}" if sch in _FSSPEC_PACKAGES else "")) from None
    try:
        cls = fsspec.get_filesystem_class(sch)
    except ImportError:
        pkg = _FSSPEC_PACKAGES.get(sch, f"the package that provides fsspec's {sch}:// file system")
        raise StorageError(f"reading {sch}:// needs {pkg}: pip install {pkg}") from None
    except ValueError:
        raise StorageError(f"unsupported storage scheme '{sch}://' (supported: local paths, s3://, gs://, and "
                           "the protocols of installed fsspec file systems, e.g. hf:// with huggingface_hub)") from None
    try:
        fs = cls(**json.loads(options))
    except (TypeError, ValueError) as e:
        raise StorageError(f"storage_options for {sch}://: {e}") from None
    return fs, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def filesystem(path: str, storage_options: dict[str, Any] | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system holding ``path`` and the path inside it (``bucket/key`` on S3 and GCS,
    the fsspec file system's own path otherwise); for readers that take a ``filesystem=`` argument
    (``pyarrow.parquet``, ``pyarrow.dataset``)."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(_local(path))
    sch = scheme(path)
    opts = resolve_options(storage_options)
    if sch == "s3":
        bucket, key = _split_s3(path)
        return _pyarrow_s3(_frozen(opts)), f"{bucket}/{key}".rstrip("/")
    if sch in GCS_SCHEMES:
        u = urlparse(path)
        if not u.netloc:
            raise StorageError(f"{path}: no bucket in the URI")
        return _pyarrow_gcs(_scheme_options(opts, sch)), f"{u.netloc}/{u.path.lstrip('/')}".rstrip("/")
    fs, pa_fs = _fsspec(sch, _scheme_options(opts, sch))
    inner = fs._strip_protocol(path)
    return pa_fs, (inner if isinstance(inner, str) else str(inner)).rstrip("/") or "/"


def _uri(path: str, inner: str, base: str = "") -> str:
    """The URI (or local path) of ``inner``, a path inside ``path``'s file system; ``base`` is
    ``path``'s own inner path (:func:`filesystem`), so that a file under the folder ``path`` keeps
    the scheme and spelling the user gave (``hf://datasets/org/name/x`` stays ``hf://...``)."""
    if not is_uri(path):
        return inner
    sch = scheme(path)
    if sch == "s3" or sch in GCS_SCHEMES:
        return f"{urlparse(path).scheme}://{inner}"
    b = base.rstrip("/")
    if b and inner.startswith(b + "/"):
        return path.rstrip("/") + inner[len(b):]
    if inner == b:
        return path
    return f"{urlparse(path).scheme}://{inner.lstrip('/')}"


@contextlib.contextmanager
def _errors(path: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise StorageError(f"{path}: no such file or object") from None
    except OSError as e:
        raise StorageError(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


# .. reading and metadata ..........................................................................

def open_input(path: str, storage_options: dict[str, Any] | None = None) -> pa.NativeFile:
    """A seekable binary file for reading (ranged GETs on S3)."""
    fs, p = filesystem(path, storage_options)
    with _errors(path):
        return fs.open_input_file(p)


def open_read(path: str, storage_options: dict[str, Any] | None = None) -> BinaryIO:
    """A binary file for reading: the built-in ``open`` for local paths (so local reads are
    exactly as before), :func:`open_input` for URIs."""
    if not is_uri(path):
        return open(_local(path), "rb")
    return open_input(path, storage_options)  # type: ignore[return-value]


def parquet_source(path: str, storage_options: dict[str, Any] | None = None) -> Any:
    """What ``pyarrow.parquet.ParquetFile`` takes: the path itself when local, an open file on S3."""
    return path if not is_uri(path) else open_input(path, storage_options)


def read_bytes(path: str, storage_options: dict[str, Any] | None = None) -> bytes:
    with open_input(path, storage_options) as f:
        return f.read()


def _info(path: str, storage_options: dict[str, Any] | None) -> pafs.FileInfo:
    fs, p = filesystem(path, storage_options)
    with _errors(path):
        return fs.get_file_info(p)


def exists(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True for a file/object, or a folder (a prefix with objects under ``prefix/``)."""
    return _info(path, storage_options).type != pafs.FileType.NotFound


def is_file(path: str, storage_options: dict[str, Any] | None = None) -> bool:
    return _info(path, storage_options).type == pafs.FileType.File


def size(path: str, storage_options: dict[str, Any] | None = None) -> int:
    info = _info(path, storage_options)
    if info.type != pafs.FileType.File:
        raise StorageError(f"{path}: no such file or object")
    return int(info.size)


def list_files(folder: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every file under ``folder`` (recursively), sorted; [] when there is none."""
    fs, p = filesystem(folder, storage_options)
    with _errors(folder):
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True))
    return sorted(_uri(folder, i.path, p) for i in infos if i.type == pafs.FileType.File)


def _glob_regex(pattern: str) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files matching ``pattern``: ``*`` and ``?`` within one path segment, ``**`` across segments;
    sorted. Lists only below the pattern's last folder without wildcards."""
    m = re.search(r"[*?\[]", pattern)
    if m is None:
        return [pattern] if is_file(pattern, storage_options) else []
    base = pattern[: m.start()].rsplit("/", 1)[0]
    rx = _glob_regex(pattern)
    return [f for f in list_files(base, storage_options) if rx.match(f)]


# .. writing .......................................................................................

def remove(path: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete one file or object; a missing one is not an error."""
    if not is_uri(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_local(path))
        return
    _check_writable(path)
    bucket, key = _split_s3(path)
    with _errors(path):
        _boto3_s3(_frozen(resolve_options(storage_options))).delete_object(Bucket=bucket, Key=key)


def remove_tree(folder: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete every file under ``folder`` (``folder/`` prefix); missing is not an error."""
    if not is_uri(folder):
        import shutil

        shutil.rmtree(_local(folder), ignore_errors=True)
        return
    _check_writable(folder)
    bucket, _ = _split_s3(folder)
    client = _boto3_s3(_frozen(resolve_options(storage_options)))
    keys = [f[len("s3://") + len(bucket) + 1:] for f in list_files(folder, storage_options)]
    for i in range(0, len(keys), 1000):
        with _errors(folder):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                          "Quiet": True})


class _S3Upload(io.RawIOBase):
    """A write-only stream that becomes one S3 object on :meth:`commit`, and nothing on :meth:`abort`."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int):
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size = max(_MIN_PART_SIZE, part_size)
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        while len(self.buf) >= self.part_size:
            self._part(bytes(self.buf[: self.part_size]))
            del self.buf[: self.part_size]
        return len(memoryview(b).cast("B"))

    def _part(self, data: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        n = len(self.parts) + 1
        r = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=data)
        self.parts.append({"PartNumber": n, "ETag": r["ETag"]})

    def commit(self) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
        else:
            if self.buf:
                self._part(bytes(self.buf))
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.buf = bytearray()

    def abort(self) -> None:
        self.buf = bytearray()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None


@contextlib.contextmanager
def publish(path: str, storage_options: dict[str, Any] | None = None) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: ``with publish(p) as f: f.write(...)``. Readers see the previous
    content (or nothing) until the block ends without an exception, then the complete new content;
    after an exception, or if the process dies, nothing new is visible under ``path``."""
    if not is_uri(path):
        target = _local(path)
        folder = os.path.dirname(os.path.abspath(target))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                yield f  # type: ignore[misc]
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    _check_writable(path)
    bucket, key = _split_s3(path)
    if not key or key.endswith("/"):
        raise StorageError(f"{path}: not an object key")
    opts = resolve_options(storage_options)
    up = _S3Upload(_boto3_s3(_frozen(opts)), bucket, key, int(opts.get("part_size") or DEFAULT_PART_SIZE))
    stream = io.BufferedWriter(up, buffer_size=1024 * 1024)
    try:
        yield stream  # type: ignore[misc]
        stream.flush()
        with _errors(path):
            up.commit()
    except BaseException:
        up.abort()
        raise


@contextlib.contextmanager
def local_target(path: str, storage_options: dict[str, Any] | None = None) -> Iterator[str]:
    """For writers that need a local file name (fastText, ARPA and YAML writers):
    ``with local_target(out) as local: write(local)``. A local ``path`` is yielded as it is. For
    a URI, ``local`` is a file of the same name in a temporary folder; when the block ends without
    an exception every file written in that folder is published beside ``path`` (``path`` itself
    first, then its sidecars such as ``path.json``), each atomically; after an exception nothing
    is published. The temporary folder is removed either way."""
    if not is_uri(path):
        yield path
        return
    _check_writable(path)
    import shutil
    import tempfile

    name = path.rstrip("/").rsplit("/", 1)[-1]
    folder = tempfile.mkdtemp(prefix="dcurate-out-")
    try:
        yield os.path.join(folder, name)
        base = path.rstrip("/")[: -len(name)]
        written = sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f)))
        for f in sorted(written, key=lambda f: (f != name, f)):
            with open(os.path.join(folder, f), "rb") as src, publish(base + f, storage_options) as dst:
                shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes(path: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Atomically replace ``path`` with ``data`` (see :func:`publish`)."""
    with publish(path, storage_options) as f:
        f.write(data)


def create_exclusive(path: str, data: bytes, storage_options: dict[str, Any] | None = None) -> bool:
    """Create ``path`` holding ``data`` only if nothing is there: True if this call created it,
    False if it already existed. Local: ``O_CREAT | O_EXCL``. S3: ``PutObject`` with
    ``If-None-Match: *`` (one writer wins even when two race; the loser gets 412 or 409)."""
    if not is_uri(path):
        target = _local(path)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    _check_writable(path)
    bucket, key = _split_s3(path)
    client = _boto3_s3(_frozen(resolve_options(storage_options)))
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except client.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return False
        raise StorageError(f"{path}: {code or status}: {e}") from None
    return True


# .. input expansion ...............................................................................

def expand_input(
    item: str, input_format: str | None = None, storage_options: dict[str, Any] | None = None
) -> list[tuple[str, str, int, float]]:
    """One input item (file, folder or glob; a URI or a local path) as ``(path, stem, size, mtime)``
    for each data file, sorted, with the rules of local inputs: a folder is listed recursively,
    skipping names that start with '_' or '.', and keeps the data-file extensions (any file with
    ``input_format``); a glob keeps what it matches; the stem is the output name (relative to the
    folder, without extension). Raises a one-line error when nothing matches."""
    fs, p = filesystem(item, storage_options)
    with _errors(item):
        info = fs.get_file_info(p)
    out: list[tuple[str, str, int, float]] = []

    def add(path: str, rel: str, fi: pafs.FileInfo) -> None:
        _, stem = detect_format(rel, input_format)
        if "/" in rel:
            stem = rel.rsplit("/", 1)[0] + "/" + stem
        mtime = fi.mtime.timestamp() if fi.mtime is not None else 0.0
        out.append((path, stem, int(fi.size), mtime))

    if re.search(r"[*?\[]", item):
        for f in glob(item, storage_options):
            fi = _info(f, storage_options)
            add(f, f.rsplit("/", 1)[-1], fi)
        if not out:
            raise InputError(f"{item}: the glob matches no file")
    elif info.type == pafs.FileType.File:
        add(item, item.rsplit("/", 1)[-1], info)
    elif info.type == pafs.FileType.Directory:
        with _errors(item):
            infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
        base = item.rstrip("/")
        for fi in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
            rel = fi.path[len(p.rstrip("/")) + 1:]
            if any(part.startswith((".", "_")) for part in rel.split("/")):
                continue
            if is_data_file(rel.rsplit("/", 1)[-1]) or input_format:
                add(f"{base}/{rel}", rel, fi)
        if not out:
            raise InputError(f"{item}: folder has no .parquet/.jsonl/.jsonl.gz/.jsonl.zst files")
    else:
        raise InputError(f"{item}: no such file, object or folder")
    return out


# .. model-like files for native libraries ........................................................

def stamp(path: str, storage_options: dict[str, Any] | None = None) -> list | None:
    """What identifies the content of a file for fingerprints and caches: ``[size, mtime_ns]`` of
    a local file (as ``os.stat`` gives them), ``[size, mtime_ns]`` of an object (its LastModified,
    which changes with every new version of the key), plus the content tag an fsspec store gives
    (hf://'s blob id, an ETag, ...) where it has one; None when there is nothing there."""
    if not is_uri(path):
        try:
            st = os.stat(_local(path))
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]
    info = _info(path, storage_options)
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    out: list = [int(info.size), int(mtime)]
    sch = scheme(path)
    if sch != "s3" and sch not in GCS_SCHEMES:  # fsspec stores: their content tag too, when they give one
        fs, _ = _fsspec(sch, _scheme_options(resolve_options(storage_options), sch))
        with _errors(path):
            meta = fs.info(fs._strip_protocol(path))
        tag = next((meta[k] for k in _VERSION_KEYS if isinstance(meta, dict) and meta.get(k)), None)
        if tag is not None:
            out.append(str(tag))
    return out


#: Fields of an fsspec file's info that identify its content (hf://: the git blob id; others: ETags,
#: generations, checksums), used by :func:`stamp` where a modification time may be missing.
_VERSION_KEYS = ("blob_id", "ETag", "etag", "generation", "version_id", "VersionId", "md5", "sha256", "checksum")


def cache_dir() -> str:
    """Where :func:`local_copy` keeps fetched files: ``$DCURATE_CACHE``, default ``~/.cache/dcurate``."""
    return os.environ.get("DCURATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dcurate")


@contextlib.contextmanager
def fetched(path: str, storage_options: dict[str, Any] | None = None) -> Iterator[str]:
    """``with fetched(uri) as local:`` :func:`local_copy` for a block that loads a model from
    ``local``; a dcurate error raised in the block names ``path`` (the URI), not the cached copy."""
    local = local_copy(str(path), storage_options)
    try:
        yield local
    except DcurateError as e:
        if local == str(path) or local not in str(e):
            raise
        raise type(e)(str(e).replace(local, str(path))) from None


def _fetch(path: str, target: str, size: int, storage_options: dict[str, Any] | None) -> None:
    """Copy ``path`` to the local file ``target`` through a temporary file beside it."""
    import tempfile

    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.tmp-")
    except OSError as e:
        raise StorageError(f"{path}: cannot cache it under {folder}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as out, open_input(path, storage_options) as src:
            while True:
                chunk = src.read(8 * 1024 * 1024)
                if not chunk:
                    break
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(tmp) != size:
            raise StorageError(f"{path}: fetched {os.path.getsize(tmp)} bytes, the object has {size} "
                               "(did it change while being read?)")
        os.replace(tmp, target)
    except OSError as e:
        raise StorageError(f"{path}: cannot fetch it into {folder}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def local_copy(path: str, storage_options: dict[str, Any] | None = None) -> str:
    """A local path holding ``path``'s content, for native libraries that open files by name
    (fastText, KenLM, sentencepiece, tokenizers): a local path as it is; a URI fetched once into
    :func:`cache_dir` under ``fetched/<hash of URI, size, mtime>/<file name>`` (the name kept, as
    some libraries look at suffixes), written to a temporary name and renamed under a lock, so
    that one process fetches and every other process and every later run reuses that copy; a new version of the object (another
    size or mtime) gets a new copy. Raises a one-line :class:`StorageError` naming the URI."""
    if not is_uri(path):
        return _local(path)
    st = stamp(path, storage_options)
    if st is None:
        raise StorageError(f"{path}: no such file or object")
    import hashlib

    digest = hashlib.sha256(json.dumps([path, *st]).encode()).hexdigest()[:32]
    name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
    folder = os.path.join(cache_dir(), "fetched", digest)
    target = os.path.join(folder, name)
    if os.path.isfile(target) and os.path.getsize(target) == st[0]:
        return target
    try:
        os.makedirs(folder, exist_ok=True)
        lock = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StorageError(f"{path}: cannot cache it under {folder}: {e.strerror or e}") from None
    try:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)  # one process fetches; the others wait, then reuse its copy
        if not (os.path.isfile(target) and os.path.getsize(target) == st[0]):
            _fetch(path, target, st[0], storage_options)
    finally:
        os.close(lock)
    return target
    try:
        os.makedirs(folder, exist_ok=True)
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.tmp-")
    except OSError as e:
        raise StorageError(f"{path}: cannot cache it under {folder}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as out, open_input(path, storage_options) as src:
            while True:
                chunk = src.read(8 * 1024 * 1024)
                if not chunk:
                    break
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(tmp) != st[0]:
            raise StorageError(f"{path}: fetched {os.path.getsize(tmp)} bytes, the object has {st[0]} "
                               "(did it change while being read?)")
        os.replace(tmp, target)
    except OSError as e:
        raise StorageError(f"{path}: cannot fetch it into {folder}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target
